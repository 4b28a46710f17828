#!/usr/bin/env bash
# make image: maskpbx's container image, FROM scratch in effect: a static
# binary (time zones built in), the CA certificates, an unprivileged user.
# Written as bin/maskpbx-image.tar (docker-archive) by deploy/image without a
# daemon or a base image; loaded into podman or docker if one runs here.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
TAG=${IMAGE_TAG:-maskpbx:latest}
mkdir -p bin/image
echo "make image: building a static maskpbx..." >&2
CGO_ENABLED=0 "$GO" build -trimpath -tags timetzdata -ldflags "-s -w" -o bin/image/maskpbx ./cmd/maskpbx
"$GO" run ./deploy/image bin/image/maskpbx bin/maskpbx-image.tar "$TAG"
echo "make image: $TAG written to bin/maskpbx-image.tar ($(du -h bin/maskpbx-image.tar | cut -f1))" >&2
if command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
	podman load -i bin/maskpbx-image.tar
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
	docker load -i bin/maskpbx-image.tar
else
	echo "make image: no podman and no running docker daemon here, so the image is not loaded;" >&2
	echo "  on a machine with one: docker load -i bin/maskpbx-image.tar (or podman load -i ...)" >&2
fi
