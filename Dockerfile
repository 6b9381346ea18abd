# TAC-X in one image: Python 3.11 for Django, Node 20 for the agent CLIs, git for worktrees.
# One image, three processes (see compose.yaml): daphne (the default command), `manage.py run_workers`
# and `manage.py run_coordinator`.

# Debian bookworm's own nodejs is 18; the agent CLIs want 20. Take Node from the official image.
FROM node:20-bookworm-slim AS node

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TACX_VAR_DIR=/data/var TACX_WORKTREE_ROOT=/data/trees TACX_STATIC_ROOT=/app/staticfiles \
    TACX_BIND=0.0.0.0 TACX_PORT=8000 TACX_MIGRATE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates bubblewrap socat ripgrep \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version

# Agents run as this user (Claude Code refuses its bypass modes as root). Its home holds the
# CLIs' own logins (e.g. `claude login`) when API keys are not used.
RUN useradd --create-home --uid 10001 tacx

WORKDIR /app
COPY requirements.txt package.json package-lock.json ./
RUN pip install --no-cache-dir -r requirements.txt && npm install --omit=dev --no-audit --no-fund
COPY . .
# Static files belong to the image (TACX_STATIC_ROOT, outside the /data volume): a volume keeps
# what it held when it was created, so files collected there would stay those of the first image.
# The app user gets /data, recursively: it writes its database, worktrees and mirrors there.
RUN python manage.py collectstatic --noinput \
 && mkdir -p /data/var /data/trees \
 && chown -R tacx:tacx /data \
 && chmod +x scripts/docker-entrypoint scripts/healthcheck

USER tacx
VOLUME ["/data"]
EXPOSE 8000
# Healthy when the web process answers /health and reaches its database (the coordinator's and
# the queue's state are in the JSON, for monitoring; they do not make this container unhealthy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["scripts/healthcheck"]
ENTRYPOINT ["scripts/docker-entrypoint"]
CMD ["sh", "-c", "exec daphne -b \"$TACX_BIND\" -p \"$TACX_PORT\" tacx_site.asgi:application"]
