# The operations manual's own commands. `make help` lists them.
CARGO ?= cargo
# Cargo's own idea of the target directory (CARGO_TARGET_DIR, .cargo/config.toml, or ./target).
TARGET_DIR := $(or $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'),target)
AICA  := $(TARGET_DIR)/release/aica
ARGS  ?=

.PHONY: help build up down restart status serve logs doctor config backup list-backups verify-backups restore restore-from backup-drill prune-backups test lint fmt deploy-check bench-http bench-backup bench-rss bench-stores

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

backup: build ## Take a verified backup now (the server may keep running)
	$(AICA) backup create --verify $(ARGS)

list-backups: build ## Backups, newest first, with their verified state
	$(AICA) backup list $(ARGS)

verify-backups: build ## Re-verify every backup
	$(AICA) backup verify --all $(ARGS)

restore: build ## Restore the newest backup (asks first; stop the server before: make down)
	$(AICA) backup restore --latest $(ARGS)

restore-from: build ## Restore a named backup: make restore-from BACKUP_FILE=aica-...aicabak
	@if [ -z "$(BACKUP_FILE)" ]; then echo "usage: make restore-from BACKUP_FILE=<name from make list-backups>"; exit 2; fi
	$(AICA) backup restore "$$(basename '$(BACKUP_FILE)')" $(ARGS)

backup-drill: build ## Monthly restore test / quarterly DR drill: restore, serve, smoke, RTO and RPO
	$(AICA) backup drill $(ARGS)

prune-backups: build ## Apply retention (make prune-backups ARGS=--dry-run to preview)
	$(AICA) backup prune $(ARGS)

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

deploy-check: ## Static checks of deploy/: promtool, kubernetes-validate, checkov, Dockerfile = make build
	bash deploy/check.sh

bench-http: ## HTTP benchmark against FastAPI and bare axum (needs wrk)
	bash bench/http.sh

bench-stores: ## SQLite vs PostgreSQL vs three replicas: cold reads and 16 writers (needs wrk, PostgreSQL)
	bash bench/stores.sh

bench-rss: ## RSS under 16 concurrent clients of distinct reads (make bench-rss ARGS="64 20")
	bash bench/rss.sh $(ARGS)

bench-backup: ## Backup/restore benchmark against cp+tar and sqlite3 .backup+zstd
	bash bench/backup.sh
