package obstest

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := stopSharedStack(); err != nil {
		fmt.Fprintln(os.Stderr, "obstest: stopping the pipeline:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
