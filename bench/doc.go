// Package bench holds Veil's hot-path benchmarks, one file per stage, each
// sized by sub-benchmark. Run them with `make bench` or
// `go test -run '^$' -bench . -benchmem ./bench/`.
package bench
