#!/usr/bin/env bash
# Lints proto/ and regenerates the Go code next to the .proto files.
# The buf version is pinned here; protoc-gen-go is pinned in go.mod.
# CI runs this and then `git diff --exit-code` to catch stale generated code.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

buf() {
	go run github.com/bufbuild/buf/cmd/buf@v1.75.0 "$@"
}

buf lint
# buf.gen.yaml cannot use `clean: true` (its out dir holds the sources), so
# generated files are removed here; a deleted .proto leaves no stale Go behind.
find proto -name '*.pb.go' -type f -delete
buf generate
