#!/usr/bin/env bash
# Build a local Debian bookworm + Python 3.11 base image for the Dockerfile's BASE_IMAGE
# build argument, for machines that cannot pull python:3.11-slim from Docker Hub.
#
#   scripts/make-base-image.sh [IMAGE_NAME]        (default: ml-api-base:bookworm)
#   docker build --build-arg BASE_IMAGE=ml-api-base:bookworm -t ml-api .
#
# Needs root, debootstrap and a Docker daemon; takes about a minute. If the image already
# exists it is kept (set FORCE=1 to rebuild). DEBOOTSTRAP_MIRROR picks a Debian mirror
# (debootstrap's default otherwise).
#
# The host's CA bundle is copied into the image, and pip is pointed at it, so that pip inside
# `docker build` trusts the same certificate authorities as pip on the host (needed behind a
# TLS-inspecting proxy). The bundle only lives in the local image; it is never committed.
set -euo pipefail

image="${1:-ml-api-base:bookworm}"
host_ca_bundle="/etc/ssl/certs/ca-certificates.crt"

if [[ "${FORCE:-0}" != "1" ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image already exists (FORCE=1 rebuilds it)"
    exit 0
fi

for tool in debootstrap docker tar; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
if [[ "$(id -u)" != "0" ]]; then
    echo "error: debootstrap needs root" >&2
    exit 1
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" ${DEBOOTSTRAP_MIRROR:+"$DEBOOTSTRAP_MIRROR"}

if [[ -f "$host_ca_bundle" ]]; then
    cp "$host_ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
fi
# Keep the image small: package lists and caches are not needed at run time.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb

tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$image"
echo "built base image $image"
