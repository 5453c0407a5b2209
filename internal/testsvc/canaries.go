package testsvc

import (
	"net/url"
	"strings"
)

// PIICanaries are personal data an end user's requests may carry, in the
// places the canary tests send them. None may be found in any column of any
// table, nor in any byte Kafka holds, in any of the forms CanaryForms gives.
var PIICanaries = []string{
	"canary.alice@example.com",
	"Alice Canaryname",
	"+14155550123",
	"4111111111111111",
	"4111 1111 1111 1111",
	"078-05-1120",
	"GB82WEST12345698765432",
	"203.0.113.99",
	"2001:db8::99",
	"198.51.100.42",
	"user-canary-4711",
	"device-canary-0815",
	"group-canary-acme",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ",
	"tok-shop",
	"secret-cookie-canary",
}

// CanaryForms are the forms a canary may be found in: as sent, lower-case,
// and URL-escaped.
func CanaryForms(c string) []string {
	return []string{c, strings.ToLower(c), url.QueryEscape(c), url.PathEscape(c), strings.ReplaceAll(c, "@", "%40")}
}
