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
//
// Each test starts a collector and a worker in-process against the shared
// test services, drives the SDK, and reads ClickHouse for the exact rows,
// profiles and groups the SDK calls must have produced. The requests each
// SDK made are logged (go test -v).
//
// Both packages are pinned in package.json and package-lock.json and
// installed by scripts/install-deps.sh with `npm ci`; no browser is ever
// downloaded by npm. To move to a new SDK version: change package.json, run
// `npm install --package-lock-only --no-audit --no-fund` here, then
// scripts/install-deps.sh, and update the version constants of the tests
// once the new version's requests have been checked.
package sdktest
