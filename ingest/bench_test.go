package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/internal/kafkatest"
)

// browserEvent is a /track event the size and shape mixpanel-browser sends.
func browserEvent(i int) string {
	return fmt.Sprintf(`{"event":"$mp_web_page_view","properties":{"$os":"Linux","$browser":"Chrome",`+
		`"$current_url":"https://shop.example/products/%d?utm_source=newsletter","$browser_version":131,`+
		`"$screen_height":1080,"$screen_width":1920,"mp_lib":"web","$lib_version":"2.83.0",`+
		`"$insert_id":"x3k9v0a8b7c6d5e%d","time":1795348800.%03d,"distinct_id":"$device:19345a7c-1b2c-4d5e-8f90-%012d",`+
		`"$device_id":"19345a7c-1b2c-4d5e-8f90-%012d","$initial_referrer":"https://www.google.com/",`+
		`"$initial_referring_domain":"www.google.com","utm_source":"newsletter","utm_medium":"email",`+
		`"current_page_title":"Product %d – Shop","current_domain":"shop.example","current_url_path":"/products/%d",`+
		`"current_url_protocol":"https:","current_url_search":"?utm_source=newsletter","token":"tok-shop",`+
		`"mp_sent_by_lib_version":"2.83.0","cart":{"items":3,"total":59.97},"tags":["a","b","c"]}}`,
		i, i, i%1000, i, i, i, i)
}

// BenchmarkCollector measures one request through the handler, Kafka
// excluded, by batch size: mixpanel-browser's batches of 50 and /import's
// of 2000.
func BenchmarkCollector(b *testing.B) {
	for _, n := range []int{1, 50, 2000} {
		events := make([]string, n)
		for i := range events {
			events[i] = browserEvent(i)
		}
		batch := "[" + strings.Join(events, ",") + "]"
		bodies := []struct {
			name, path, ct string
			body           []byte
		}{
			{"form-base64", "/track/?verbose=1&ip=1&_=1795348800000", "application/x-www-form-urlencoded", []byte("data=" + url.QueryEscape(b64(batch)))},
			{"json", "/track", "application/json", []byte(batch)},
		}
		for _, bd := range bodies {
			b.Run(bd.name+"/events="+strconv.Itoa(n), func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.Projects = []Project{{Name: "shop", Token: "tok-shop"}}
				c, err := New(cfg, "raw", Deps{Producer: &kafkatest.Producer{Discard: true}, Metrics: prometheus.NewRegistry()})
				if err != nil {
					b.Fatal(err)
				}
				c.now = func() time.Time { return fixedNow }
				h := c.Handler()
				b.SetBytes(int64(len(bd.body)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					r := httptest.NewRequest(http.MethodPost, bd.path, bytes.NewReader(bd.body))
					r.Header.Set("Content-Type", bd.ct)
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code != 200 {
						b.Fatalf("status %d %s", w.Code, w.Body)
					}
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkCollectorHTTP serves on loopback, Kafka excluded, and posts
// mixpanel-browser's 50-event batches from parallel keep-alive clients: the
// collector's whole cost per event, HTTP included.
func BenchmarkCollectorHTTP(b *testing.B) {
	events := make([]string, 50)
	for i := range events {
		events[i] = browserEvent(i)
	}
	body := []byte("data=" + url.QueryEscape(b64("["+strings.Join(events, ",")+"]")))
	cfg := DefaultConfig()
	cfg.Projects = []Project{{Name: "shop", Token: "tok-shop"}}
	c, err := New(cfg, "raw", Deps{Producer: &kafkatest.Producer{Discard: true}, Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	c.now = func() time.Time { return fixedNow }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	target := "http://" + l.Addr().String() + "/track/?verbose=1&ip=1&_=1795348800000"
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(target, "application/x-www-form-urlencoded", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(50*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
