# syntax=docker/dockerfile:1
# The AIRollout operator image: the package and its dependencies in a virtualenv, copied onto a clean slim
# Python, run as a numeric non-root user so the pod's runAsNonRoot can be checked. Only the operator distribution
# is installed: the test bed (testbed/) is a distribution of its own and never reaches the build context.
#
#   docker build -t airollout:0.1.0 .
#
# Without a Docker engine or a registry, `bash scripts/image.sh build` builds it with buildah on a Debian base
# made by debootstrap (docs/packaging.md). Either base works: the file calls only `python3`, which both have.
# Pip's CA for a TLS-intercepting proxy comes in as a build secret (`--secret id=ca,src=FILE`), mounted for the
# installs alone and never written into a layer. The dependencies get a layer of their own, so the builder's
# layer cache (buildah --layers, kept under ~/.cache/airollout) spares a rebuild after a code change from them.
#
# The base is pinned by digest (python:3.11-slim-bookworm); to move it, resolve the new digest with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# and pass it as --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>, or edit the line below.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# The venv gets no pip of its own: the builder's pip installs into it, so the final image carries one pip
# fewer (the base's own pip stays, as the base ships it).
RUN python3 -m venv --without-pip /opt/airollout
WORKDIR /src
# Every runtime dependency ships wheels for this Python, so the builder needs no compiler either.
# The dependencies first, read from pyproject.toml: a rebuild after a code change keeps their layer.
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
    > /tmp/requirements.txt \
 && python3 -m pip --python /opt/airollout/bin/python install --no-cache-dir -r /tmp/requirements.txt \
 && /opt/airollout/bin/python -m compileall -q /opt/airollout/lib
COPY README.md ./
COPY operator/ operator/
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -m pip --python /opt/airollout/bin/python install --no-cache-dir --no-deps . \
 && /opt/airollout/bin/python -m compileall -q /opt/airollout/lib/python*/site-packages/airollout

FROM ${PYTHON_IMAGE}
# What never changes comes first, so a rebuild after a code change adds one layer here: the COPY at the end.
LABEL org.opencontainers.image.title="airollout" \
      org.opencontainers.image.description="Kubernetes operator for staged, guardrail-gated AI feature rollouts through FeatBit feature flags" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/airollout/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["airollout", "run"]
COPY --from=builder /opt/airollout /opt/airollout
