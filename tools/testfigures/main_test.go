package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestCounts"}`,
		`{"Action":"output","Package":"p","Test":"TestCounts","Output":"=== RUN   TestCounts\n"}`,
		`{"Action":"output","Package":"p","Test":"TestCounts","Output":"    x_test.go:10: figures: 46 tracked, 46 rows\n"}`,
		`{"Action":"output","Package":"p","Test":"TestCounts","Output":"--- PASS: TestCounts (0.01s)\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestCounts"}`,
		`{"Action":"output","Package":"p","Test":"TestQuiet","Output":"    x_test.go:20: chatter\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestQuiet"}`,
		`{"Action":"output","Package":"p","Test":"TestBroken/sub","Output":"    x_test.go:30: want 3 rows, got 1\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestBroken/sub"}`,
		`{"Action":"output","Package":"p","Test":"TestBroken","Output":"--- FAIL: TestBroken (0.02s)\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestBroken"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\n"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}`,
		`{"Action":"fail","Package":"p"}`,
		`{"Action":"output","Package":"q","Output":"PASS\n"}`,
		`{"Action":"output","Package":"q","Output":"ok  \tq\t0.1s\n"}`,
		`{"Action":"pass","Package":"q"}`,
	}, "\n")
	var out bytes.Buffer
	s := &summary{out: &out, logs: map[[2]string][]string{}}
	if err := s.read(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	want := "p TestCounts: figures: 46 tracked, 46 rows\n" +
		"    x_test.go:30: want 3 rows, got 1\n" +
		"--- FAIL: TestBroken (0.02s)\n" +
		"FAIL\n" +
		"FAIL\tp\t0.1s\n" +
		"ok  \tq\t0.1s\n"
	if out.String() != want {
		t.Fatalf("printed\n%s\nwant\n%s", out.String(), want)
	}
	if !s.failed {
		t.Fatal("a failed test did not fail the summary")
	}
}
