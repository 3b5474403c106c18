# syntax=docker/dockerfile:1
# The voice-agent proxy as a container: python -m proxy on port 8080, as an unprivileged user.
#
#   docker build -t voice-agent-proxy .
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY -e DEEPGRAM_API_KEY voice-agent-proxy
#
# Stage 1 installs the locked runtime versions (wheels only: nothing is compiled) and the proxy into a virtual
# environment; stage 2 is a clean slim image with that environment and nothing else. See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The lock first, so the dependency layer is reused while only the proxy's code changes.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --only-binary=:all: -r requirements/runtime.txt
# LICENS[E]: the licence text travels with the package when the checkout has one.
COPY pyproject.toml README.md LICENS[E] ./
COPY proxy ./proxy
# --no-deps: the locked versions above are the whole dependency set.
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="voice-agent-proxy" \
      org.opencontainers.image.description="OpenAI Realtime translator and Deepgram pass-through for the voice-agent component" \
      org.opencontainers.image.licenses="MIT"
# A fixed numeric id, so Kubernetes' runAsNonRoot can check it without resolving names.
RUN groupadd --system --gid 10001 proxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin proxy
COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/voice-agent-proxy/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROXY_HOST=0.0.0.0 \
    PROXY_PORT=8080
WORKDIR /opt/voice-agent-proxy
USER 10001:10001
EXPOSE 8080
# SIGTERM drains (sessions go on for up to the drain timeout); give `docker stop -t` more than
# drain timeout + shutdown grace (20 + 5 s by default).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/opt/voice-agent-proxy/healthcheck.py"]
ENTRYPOINT ["python", "-m", "proxy"]
CMD ["serve"]
