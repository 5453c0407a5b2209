// Command testfigures reads `go test -json` and prints what a person
// reading CI's log wants: each package's closing line as go test prints
// it, the whole output of every test that failed, and the figures of the
// passing tests (exact counts, measured bounds): the t.Log lines that start
// with "figures: ", so that the numbers a test checks are in the log
// without -v's noise.
//
//	go test -json ./... | testfigures
//
// It exits 1 when a test or package failed, or the input ended early, so
// `set -o pipefail` is not needed to fail the build.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type summary struct {
	out io.Writer
	// logs holds each running test's output until it ends: key package and
	// test name.
	logs   map[[2]string][]string
	failed bool
}

func main() {
	flag.Parse()
	s := &summary{out: os.Stdout, logs: map[[2]string][]string{}}
	if err := s.read(os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "testfigures:", err)
		os.Exit(1)
	}
	if s.failed {
		os.Exit(1)
	}
}

func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Not test2json's: a build error, printed as it is.
			fmt.Fprintln(s.out, string(line))
			if strings.Contains(string(line), "FAIL") || strings.Contains(string(line), "build failed") {
				s.failed = true
			}
			continue
		}
		s.event(e)
	}
	return sc.Err()
}

func (s *summary) event(e event) {
	// A subtest's lines are kept with its top-level test's, in order.
	top, _, _ := strings.Cut(e.Test, "/")
	key := [2]string{e.Package, top}
	switch {
	case e.Test == "":
		// The package's own lines: ok, FAIL, build errors, panics outside
		// a test.
		if (e.Action == "output" || e.Action == "build-output") && !isNoise(e.Output) {
			fmt.Fprint(s.out, e.Output)
		}
		if e.Action == "fail" {
			s.failed = true
		}
	case e.Action == "output":
		s.logs[key] = append(s.logs[key], e.Output)
	case e.Action == "fail":
		s.failed = true
		// A subtest's failure is printed with its top-level test's output.
		if top == e.Test {
			for _, l := range s.logs[key] {
				fmt.Fprint(s.out, l)
			}
			delete(s.logs, key)
		}
	case (e.Action == "pass" || e.Action == "skip") && top == e.Test:
		for _, l := range s.logs[key] {
			if m := figureLine.FindStringSubmatch(l); m != nil {
				fmt.Fprintf(s.out, "%s %s: %s", shortPkg(e.Package), e.Test, m[1])
			}
		}
		delete(s.logs, key)
	}
}

// figureLine is a t.Log line (indented, file:line:) that reports figures.
var figureLine = regexp.MustCompile(`^\s+\S+\.go:\d+: (figures: .*\n?)$`)

// isNoise is the package-level chatter -v adds.
func isNoise(l string) bool {
	return l == "PASS\n" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- PASS")
}

func shortPkg(p string) string { return strings.TrimPrefix(p, "github.com/veilhq/veil/") }
