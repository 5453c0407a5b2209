// Package sdktest holds Veil's compatibility tests against the official
// Mixpanel SDKs, which are the judges of whether Veil speaks Mixpanel's
// ingestion API:
//
//   - TestNodeSDK runs node/run.js, which drives the Node library (npm
//     package `mixpanel`) through track, track_batch, import, import_batch,
//     every people and groups operation, with an API secret and with a
//     service account, against a collector serving HTTPS.
//   - TestBrowserSDK loads browser/page.html with mixpanel-browser in
//     Debian's headless `chromium`: batched XMLHttpRequest flushes,
//     identify, a profile update, a navigator.sendBeacon flush when the page
//     is hidden, and an <img> pixel. TestBrowserSDKOverHTTPS repeats the
//     first part over HTTPS, where Chromium speaks HTTP/2.
//   - TestBrowserOptOut presses the button of the collector's /optout page
//     in Chromium, has another site try to undo the choice (refused), sends
//     mixpanel-browser's events from that site with the opt-out cookie
//     (dropped), and opts back in on /optin (stored).
//   - TestGoSDK drives the Go library (github.com/mixpanel/mixpanel-go, in
//     go.mod) in-process: Track, Import strict and not, with an API secret
//     and a service account, every People and Group call; it checks what
//     the library decoded from each answer (NumRecordsImported, failed
//     records with their index and insert_id).
//   - TestPythonSDK runs python/run.py, which drives the Python library
//     (PyPI `mixpanel`) through track, import_data with an API secret and a
//     service account, BufferedConsumer batches, every people and group
//     call, against a collector serving HTTPS, where the library's
//     api_host sends it.
//   - TestJavaSDK runs java/src/main/java/veil/sdktest/Run.java, which
//     drives the Java library (com.mixpanel:mixpanel-java) through single
//     and delivered events, imports strict and not, and all people and
//     group updates, each kind in one request.
//
// Each test starts a collector and a worker in-process against the shared
// test services, drives the SDK, and reads ClickHouse for the exact rows,
// profiles and groups the SDK calls must have produced. The requests each
// SDK made are logged (go test -v), and a passing test logs its counts.
//
// Every SDK is pinned to an exact version, and each test checks the pin
// against the version it is written for, so that a new version is reviewed
// rather than picked up silently:
//
//   - npm: package.json and package-lock.json, installed by
//     scripts/install-deps.sh with `npm ci` (no browser is ever downloaded
//     by npm). To move on: change package.json, run `npm install
//     --package-lock-only --no-audit --no-fund` here, then
//     scripts/install-deps.sh.
//   - Go: go.mod. To move on: `go get github.com/mixpanel/mixpanel-go@VERSION`.
//   - Python: python/requirements.txt, every package at an exact version,
//     installed by scripts/install-deps.sh into python/.venv (a venv of
//     Debian's python3), anew whenever the file changes.
//   - Java: java/pom.xml, whose jars scripts/install-deps.sh copies into
//     java/target/lib whenever the file changes; the test runs Run.java as
//     a source file against them.
//
// Then update the version constant of the test once the new version's
// requests have been checked.
package sdktest
