# Load for bench/rss.sh: N threads of distinct GETs for S seconds; prints requests and peak/final RSS.
import concurrent.futures, http.client, json, random, sys, time, os
ENCS=os.environ.get("ENCS","gzip,br,identity,").split(",")
port=int(sys.argv[1]); pid=sys.argv[2]; n=int(sys.argv[3]); secs=float(sys.argv[4])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])/1024
def worker(i):
    c=http.client.HTTPConnection("127.0.0.1",port); end=time.time()+secs; k=0
    while time.time()<end:
        r=random.random()
        if r<0.5: p=f"/api/optimized/articles?limit=100&skip={random.randint(0,5900)}"
        elif r<0.7: p=f"/api/optimized/articles?limit={random.randint(1,100)}&from=2026-0{random.randint(1,9)}-1{random.randint(0,9)}"
        elif r<0.85: p=f"/api/optimized/newsletters?limit=100&skip={random.randint(0,300)}"
        else: p=f"/api/articles/nope-{random.randint(0,10**9)}"
        enc=random.choice(ENCS)
        c.request("GET",p,headers={"Accept-Encoding":enc} if enc else {}); c.getresponse().read(); k+=1
    return k
peak=0
with concurrent.futures.ThreadPoolExecutor(n) as ex:
    fs=[ex.submit(worker,i) for i in range(n)]
    while not all(f.done() for f in fs):
        peak=max(peak,rss()); time.sleep(0.5)
    total=sum(f.result() for f in fs)
print(f"clients={n} requests={total} peak_rss={peak:.1f}MiB after={rss():.1f}MiB")
