package main

// version and revision are stamped by the build from git (Makefile:
// -ldflags "-X main.version=… -X main.revision=…"); a plain `go build`
// says devel.
var (
	version  = "devel"
	revision = "unknown"
)

// versionLine is what `veil --version` prints.
func versionLine() string { return "veil " + version + " (revision " + revision + ")" }
