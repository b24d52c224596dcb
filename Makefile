# The operations manual's own commands. `make help` lists them.
CARGO ?= cargo
AICA  := target/release/aica
ARGS  ?=

.PHONY: help build up down restart status serve logs doctor config test lint fmt bench-http clean-run

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## Build the release binary (incremental)
	$(CARGO) build --release --locked

up: build ## Start aica in the background (backend :8000, console :3000)
	$(AICA) up $(ARGS)

down: ## Stop the background aica gracefully
	@if [ -x $(AICA) ]; then $(AICA) down $(ARGS); else echo "aica is not built; nothing to stop"; fi

restart: build ## Stop, then start again
	$(AICA) restart $(ARGS)

status: build ## Is it running? pid, uptime, ports, health
	$(AICA) status $(ARGS)

serve: build ## Run in the foreground (what a container runs)
	$(AICA) serve $(ARGS)

logs: build ## Follow the logs (make logs ARGS="--level error --since 24h" to filter)
	$(AICA) logs --follow $(ARGS)

doctor: build ## Why won't it start? config, ports, dirs, database, disk
	$(AICA) doctor $(ARGS)

config: build ## Effective settings and where each came from
	$(AICA) config show $(ARGS)

test: lint ## The whole test suite (what CI runs)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --locked --no-fail-fast; \
	else \
		$(CARGO) test --locked --no-fail-fast; \
	fi

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

bench-http: ## HTTP benchmark against FastAPI and bare axum (needs wrk)
	bash bench/http.sh
