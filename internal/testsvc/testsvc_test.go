package testsvc

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/veilhq/veil/internal/kafkax"
)

func TestMain(m *testing.M) { os.Exit(MainNoLeaks(m)) }

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	fatal string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
}

func TestKafkaKind(t *testing.T) {
	for _, tc := range []struct {
		env, want, fatal string
	}{
		{env: "", want: KafkaEmbedded},
		{env: "embedded", want: KafkaEmbedded},
		{env: "apache", want: KafkaApache},
		{env: "Apache", fatal: `testsvc: VEIL_TEST_KAFKA="Apache": want "embedded" or "apache"`},
		{env: "kfake", fatal: `testsvc: VEIL_TEST_KAFKA="kfake": want "embedded" or "apache"`},
	} {
		t.Run(fmt.Sprintf("%q", tc.env), func(t *testing.T) {
			t.Setenv(KafkaEnv, tc.env)
			ft := &fatalTB{TB: t}
			if got := KafkaKind(ft); got != tc.want || ft.fatal != tc.fatal {
				t.Fatalf("KafkaKind() = %q, failing with %q; want %q, failing with %q", got, ft.fatal, tc.want, tc.fatal)
			}
		})
	}
}

// TestKafkaConfigEmbedded: on the embedded broker the configuration asks
// for what one broker can hold, and Veil's topics are created with it.
func TestKafkaConfigEmbedded(t *testing.T) {
	t.Setenv(KafkaEnv, KafkaEmbedded)
	cfg := KafkaConfig(t)
	if cfg.ReplicationFactor != 1 || cfg.MinInsyncReplicas != 1 || len(cfg.Brokers) != 1 {
		t.Fatalf("config %+v, want one broker, one copy, one in sync", cfg)
	}
	cfg.RawTopic, cfg.DLQTopic = Unique(t, "raw"), Unique(t, "dlq")
	if err := kafkax.EnsureTopics(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
}
