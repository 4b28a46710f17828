// Package console is maskpbx's web console: server-rendered pages
// (html/template, assets embedded) for managers (their clients, click-to-call
// with live state), supervisors (calls, recordings, reassignment, charts) and
// admins (managers, clients, CSV import, reveal, audit), with password
// sign-in, cookie sessions and CSRF protection. It changes state through the
// JSON API (package api), in-process and under the user's own session, and
// never puts a client's phone number on a page but the reveal an admin asks
// for. It knows nothing of SIP.
package console
