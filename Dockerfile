# TAC-X in one image: Python 3.11 for Django, Node 20 for the agent CLIs, git for worktrees.
# Run the processes of the Procfile from it (daphne, qcluster, run_coordinator).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TACX_VAR_DIR=/data/var TACX_WORKTREE_ROOT=/data/trees
RUN apt-get update \
 && apt-get install -y --no-install-recommends git nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt package.json package-lock.json ./
RUN pip install --no-cache-dir -r requirements.txt && npm ci --omit=dev --no-audit --no-fund
COPY . .
RUN python manage.py collectstatic --noinput

# Agents run as this user (Claude Code refuses its bypass modes as root).
RUN useradd --create-home tacx && mkdir -p /data && chown tacx /data
USER tacx
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "tacx_site.asgi:application"]
