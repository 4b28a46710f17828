package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file is the web console's part of the store: web passwords, console
// sessions, the sign-in failure counter, and the read models the console's
// pages need (clients with their last call, call search, daily call counts).

// WebAccount is a person who may sign in to the web console: his manager row
// and his password hash (the hash's own format says which algorithm).
type WebAccount struct {
	Manager      Manager
	PasswordHash string
}

// WebAccountByUsername returns the web account of the person with a SIP
// username (the console's sign-in name). It is ErrNotFound when there is no
// such person or he has no web password; the caller checks his status.
func (s *Store) WebAccountByUsername(ctx context.Context, username string) (WebAccount, error) {
	var a WebAccount
	m := &a.Manager
	err := s.pool.QueryRow(ctx, `SELECT `+prefixed("m.", managerColumns)+`, w.password_hash
		FROM managers m JOIN web_accounts w ON w.manager_id = m.id WHERE m.sip_username = $1`, username).
		Scan(&m.ID, &m.Name, &m.SIPUsername, &m.HA1MD5, &m.HA1SHA256, &m.Team, &m.Role, &m.Status,
			&m.CreatedAt, &m.DismissedAt, &a.PasswordHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrNotFound
	}
	return a, err
}

// WebAccountIDs returns the ids of the managers who have a web password.
func (s *Store) WebAccountIDs(ctx context.Context) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT manager_id::text FROM web_accounts`)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// SetWebPassword sets an active manager's web password hash, revokes his
// console sessions (a new password ends the old sessions, keepSession
// excepted) and audits it, in one transaction.
func (s *Store) SetWebPassword(ctx context.Context, managerID, hash string, keepSession []byte, actor string) error {
	if hash == "" {
		return errors.New("storage: empty password hash")
	}
	if !validUUID(managerID) {
		return ErrUnknownManager
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockActiveManagers(ctx, tx, []string{managerID}); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO web_accounts (manager_id, password_hash) VALUES ($1, $2)
			ON CONFLICT (manager_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()`,
			managerID, hash); err != nil {
			return fmt.Errorf("storage: set web password: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE web_sessions SET revoked_at = now()
			WHERE manager_id = $1 AND revoked_at IS NULL AND token_hash <> coalesce($2, ''::bytea)`,
			managerID, keepSession); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "manager.web_password", Object: "manager:" + managerID})
	})
}

// SetSIPPassword replaces an active manager's SIP digests and audits it. His
// phones keep their registrations until they next authenticate.
func (s *Store) SetSIPPassword(ctx context.Context, managerID, ha1MD5, ha1SHA256, actor string) error {
	if !validUUID(managerID) {
		return ErrUnknownManager
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockActiveManagers(ctx, tx, []string{managerID}); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE managers SET ha1_md5 = $2, ha1_sha256 = $3 WHERE id = $1`,
			managerID, ha1MD5, ha1SHA256); err != nil {
			return fmt.Errorf("storage: set SIP password: %w", err)
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "manager.sip_password", Object: "manager:" + managerID})
	})
}

// WebSession is a live console session.
type WebSession struct {
	// ManagerID is empty for a bootstrap admin session.
	ManagerID string
	// Role and Name are the manager's, now (an admin session of the
	// bootstrap token is RoleAdmin with no name).
	Role, Name string
	// Settings are the manager's language and time zone (empty for the
	// bootstrap admin).
	Settings PersonSettings
	// BootstrapHash is the SHA-256 of the admin token a bootstrap session
	// was opened with; nil for a manager's session.
	BootstrapHash []byte
	CreatedAt     time.Time
	LastSeenAt    time.Time
	ExpiresAt     time.Time
}

// NewWebSession is what it takes to open a console session: the SHA-256 of
// the cookie's token, whose it is (a manager id, or the bootstrap token's
// hash), until when it may live, and where the sign-in came from.
type NewWebSession struct {
	TokenHash     []byte
	ManagerID     string
	BootstrapHash []byte
	ExpiresAt     time.Time
	Source        string
}

// CreateWebSession opens a console session and audits the sign-in. A
// manager's session is refused (ErrUnknownManager) once he is dismissed.
func (s *Store) CreateWebSession(ctx context.Context, ns NewWebSession, actor string) error {
	if len(ns.TokenHash) == 0 || (ns.ManagerID == "") == (ns.BootstrapHash == nil) {
		return errors.New("storage: a web session needs a token and exactly one owner")
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		object := "web:bootstrap"
		var managerID any
		if ns.ManagerID != "" {
			if err := lockActiveManagers(ctx, tx, []string{ns.ManagerID}); err != nil {
				return err
			}
			managerID, object = ns.ManagerID, "manager:"+ns.ManagerID
		}
		if _, err := tx.Exec(ctx, `INSERT INTO web_sessions (token_hash, manager_id, bootstrap_hash, expires_at, source)
			VALUES ($1, $2, $3, $4, $5)`, ns.TokenHash, managerID, ns.BootstrapHash, ns.ExpiresAt, clip(ns.Source, 64)); err != nil {
			return fmt.Errorf("storage: create web session: %w", err)
		}
		// Opportunistic clean-up keeps the table small without a janitor.
		if _, err := tx.Exec(ctx, `DELETE FROM web_sessions WHERE expires_at < now() - interval '7 days'`); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "web.signin", Object: object, Reason: clip(ns.Source, 64)})
	})
}

// touchEvery is how stale last_seen_at may get before a lookup writes it.
const touchEvery = time.Minute

// WebSession returns the live session a token hash names. It is ErrNotFound
// when the session is unknown, revoked, past its expiry, idle for longer than
// idle, or its manager is no longer active.
func (s *Store) WebSession(ctx context.Context, tokenHash []byte, idle time.Duration) (WebSession, error) {
	var ws WebSession
	var managerID, role, name, lang, zone *string
	err := s.pool.QueryRow(ctx, `SELECT s.manager_id::text, m.role, m.name, m.language, m.time_zone, s.bootstrap_hash, s.created_at, s.last_seen_at, s.expires_at
		FROM web_sessions s LEFT JOIN managers m ON m.id = s.manager_id
		WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
		  AND s.last_seen_at > now() - make_interval(secs => $2)
		  AND (s.manager_id IS NULL OR m.status = 'active')`, tokenHash, idle.Seconds()).
		Scan(&managerID, &role, &name, &lang, &zone, &ws.BootstrapHash, &ws.CreatedAt, &ws.LastSeenAt, &ws.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ws, ErrNotFound
	}
	if err != nil {
		return ws, err
	}
	if managerID != nil {
		ws.ManagerID, ws.Role, ws.Name = *managerID, *role, *name
		ws.Settings = PersonSettings{Language: *lang, TimeZone: *zone}
	} else {
		ws.Role = RoleAdmin
	}
	if time.Since(ws.LastSeenAt) > touchEvery {
		if _, err := s.pool.Exec(ctx, `UPDATE web_sessions SET last_seen_at = now() WHERE token_hash = $1`, tokenHash); err != nil {
			return ws, err
		}
	}
	return ws, nil
}

// RevokeWebSession ends one session (sign-out) and audits it.
func (s *Store) RevokeWebSession(ctx context.Context, tokenHash []byte, actor string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		var managerID *string
		err := tx.QueryRow(ctx, `UPDATE web_sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL
			RETURNING manager_id::text`, tokenHash).Scan(&managerID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // already gone: signing out twice is fine
		}
		if err != nil {
			return err
		}
		object := "web:bootstrap"
		if managerID != nil {
			object = "manager:" + *managerID
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "web.signout", Object: object})
	})
}

// RevokeWebSessions ends every console session of a manager and returns how
// many were live. Dismissal needs no call to it (a dismissed manager's
// sessions stop at once), but it keeps the rows telling the truth.
func (s *Store) RevokeWebSessions(ctx context.Context, managerID string) (int, error) {
	if !validUUID(managerID) {
		return 0, ErrNotFound
	}
	tag, err := s.pool.Exec(ctx, `UPDATE web_sessions SET revoked_at = now() WHERE manager_id = $1 AND revoked_at IS NULL`, managerID)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}

// SigninFailure is one failed sign-in as the rate limiter and the audit log
// record it.
type SigninFailure struct {
	Username string // as typed, clipped
	Source   string // the client's address
	Reason   string // "bad_password", "unknown_user", "dismissed", "bad_token", ...
	// Locked is set when this failure reached the limit: the audit row then
	// says the account or source is now blocked.
	Locked bool
	// Attempt is the attempt BeginSignin counted; its row already counts as
	// a failure, so none is added. Zero: add one.
	Attempt int64
}

// RecordSigninFailure counts a failed sign-in (unless its attempt already
// counts) and audits it, in one transaction; rows older than a day are
// pruned on the way.
func (s *Store) RecordSigninFailure(ctx context.Context, f SigninFailure) error {
	user, source := clip(strings.ToLower(f.Username), 64), clip(f.Source, 64)
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if f.Attempt == 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO web_signin_failures (username, source) VALUES ($1, $2)`, user, source); err != nil {
				return fmt.Errorf("storage: record sign-in failure: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM web_signin_failures WHERE at < now() - interval '1 day'`); err != nil {
			return err
		}
		action := "web.signin_failed"
		if f.Locked {
			action = "web.signin_locked"
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: "web:" + source, Action: action, Object: "web_account:" + user,
			Reason: f.Reason})
	})
}

// SigninLimits are the sign-in rate limits BeginSignin applies.
type SigninLimits struct {
	// Window is how long a failure counts.
	Window time.Duration
	// PerSource failures from one address in Window refuse every further
	// attempt from it until the oldest of them leaves the window.
	PerSource int
	// PerUser failures of one username in Window start a back-off: from an
	// address the person has not signed in from, the next attempt must wait
	// BaseDelay after the newest failure, doubling with every further
	// failure up to MaxDelay. From an address he has signed in from (a
	// session of his was opened there) he is not slowed: a stranger's
	// guesses cannot lock him out.
	PerUser             int
	BaseDelay, MaxDelay time.Duration
}

// SigninTicket is BeginSignin's answer: an attempt that may test its
// password, or a refusal.
type SigninTicket struct {
	// Attempt identifies the counted attempt; zero when refused.
	Attempt int64
	// RetryAfter, when refused, is how long until an attempt may pass.
	RetryAfter time.Duration
	// Limit names what refused it: "source" or "user".
	Limit string
	// UserFailures and SourceFailures are the failures counted before
	// this attempt.
	UserFailures, SourceFailures int
	username, source             string
}

// signinLock serialises the counting of sign-in attempts across nodes.
const signinLock = 0x6d61736b70627802

// BeginSignin decides, before any password is tested, whether an attempt
// for username from source may go ahead, and if so counts it as a failure
// at once; SigninSucceeded takes it back. Counting and deciding happen
// under one lock, so parallel guesses each see the ones before them.
func (s *Store) BeginSignin(ctx context.Context, username, source string, lim SigninLimits) (SigninTicket, error) {
	t := SigninTicket{username: clip(strings.ToLower(username), 64), source: clip(source, 64)}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(signinLock)); err != nil {
			return fmt.Errorf("storage: sign-in lock: %w", err)
		}
		var now time.Time
		var oldestSource, newestUser *time.Time
		var known bool
		err := tx.QueryRow(ctx, `SELECT now(),
			(SELECT count(*) FROM web_signin_failures WHERE username = $1 AND at > now() - $3::interval),
			(SELECT max(at) FROM web_signin_failures WHERE username = $1 AND at > now() - $3::interval),
			(SELECT count(*) FROM web_signin_failures WHERE source = $2 AND at > now() - $3::interval),
			(SELECT min(at) FROM web_signin_failures WHERE source = $2 AND at > now() - $3::interval),
			EXISTS (SELECT 1 FROM web_sessions ws JOIN managers m ON m.id = ws.manager_id
				WHERE ws.source = $2 AND lower(m.sip_username) = $1)`,
			t.username, t.source, lim.Window).Scan(&now, &t.UserFailures, &newestUser, &t.SourceFailures, &oldestSource, &known)
		if err != nil {
			return fmt.Errorf("storage: count sign-in failures: %w", err)
		}
		if t.SourceFailures >= lim.PerSource && oldestSource != nil {
			t.Limit, t.RetryAfter = "source", max(oldestSource.Add(lim.Window).Sub(now), time.Second)
			return nil
		}
		if !known && t.UserFailures >= lim.PerUser && newestUser != nil {
			wait := lim.BaseDelay << min(t.UserFailures-lim.PerUser, 30)
			if wait <= 0 || wait > lim.MaxDelay {
				wait = lim.MaxDelay
			}
			if until := newestUser.Add(wait); until.After(now) {
				t.Limit, t.RetryAfter = "user", max(until.Sub(now), time.Second)
				return nil
			}
		}
		return tx.QueryRow(ctx, `INSERT INTO web_signin_failures (username, source) VALUES ($1, $2) RETURNING id`,
			t.username, t.source).Scan(&t.Attempt)
	})
	return t, err
}

// SigninSucceeded takes back a counted attempt whose password was right,
// with the username's earlier failures from the same address. Failures
// from elsewhere stay: the person signing in does not reset a stranger's
// back-off.
func (s *Store) SigninSucceeded(ctx context.Context, t SigninTicket) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM web_signin_failures WHERE id = $1 OR (username = $2 AND source = $3)`,
		t.Attempt, t.username, t.source)
	return err
}

// SigninFailures counts the failed sign-ins since a time for a username and
// for a source address.
func (s *Store) SigninFailures(ctx context.Context, username, source string, since time.Time) (byUser, bySource int, err error) {
	err = s.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM web_signin_failures WHERE username = $1 AND at > $3),
		(SELECT count(*) FROM web_signin_failures WHERE source = $2 AND at > $3)`,
		clip(strings.ToLower(username), 64), clip(source, 64), since).Scan(&byUser, &bySource)
	return byUser, bySource, err
}

// ClearSigninFailures forgets a username's failures after he signed in.
func (s *Store) ClearSigninFailures(ctx context.Context, username string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM web_signin_failures WHERE username = $1`, clip(strings.ToLower(username), 64))
	return err
}

// clip cuts s to at most n bytes without splitting a UTF-8 character.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// ClientSummary is a client as the console's lists show him: no phones, his
// assignment as seen by the manager asking, and his last call.
type ClientSummary struct {
	Client
	// Partner is true when the manager asking is his partner, not primary.
	Partner  bool
	LastCall *CDR
}

// ClientSummaries lists clients by name with their last call. With
// managerID set, only those currently assigned to him; query, if not empty,
// matches a part of the name (any case) or the start of the code.
func (s *Store) ClientSummaries(ctx context.Context, managerID, query string, limit int) ([]ClientSummary, error) {
	if managerID != "" && !validUUID(managerID) {
		return []ClientSummary{}, nil
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	query = strings.TrimSpace(query)
	escaped := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(query)
	rows, err := s.pool.Query(ctx, `SELECT c.id, c.code, c.name, c.segment, c.created_at,
		coalesce((SELECT a.manager_id::text FROM assignments a
			WHERE a.client_id = c.id AND a.valid_until IS NULL AND a.kind = 'primary'), ''),
		coalesce((SELECT array_agg(a.manager_id::text ORDER BY a.valid_from, a.id) FROM assignments a
			WHERE a.client_id = c.id AND a.valid_until IS NULL AND a.kind = 'partner'), '{}'),
		EXISTS (SELECT 1 FROM assignments a WHERE a.client_id = c.id AND a.valid_until IS NULL
			AND a.kind = 'partner' AND a.manager_id = nullif($1::text, '')::uuid),
		l.call_id::text, coalesce(l.direction, ''), coalesce(l.manager_id::text, ''), l.offered_at, l.answered_at,
		l.ended_at, coalesce(l.duration_ms, 0), coalesce(l.disposition, ''), coalesce(l.hangup_side, '')
		FROM clients c
		LEFT JOIN LATERAL (SELECT * FROM cdrs WHERE cdrs.client_id = c.id
			ORDER BY offered_at DESC NULLS LAST LIMIT 1) l ON true
		WHERE ($1::text = '' OR EXISTS (SELECT 1 FROM assignments a WHERE a.client_id = c.id
			AND a.valid_until IS NULL AND a.manager_id = nullif($1::text, '')::uuid))
		  AND ($2::text = '' OR c.name ILIKE '%' || $2 || '%' OR c.code LIKE $2 || '%')
		ORDER BY c.name, c.code LIMIT $3`, managerID, escaped, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: client summaries: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ClientSummary, error) {
		var x ClientSummary
		var cdr CDR
		var callID *string
		var ms int64
		c := &x.Client
		err := r.Scan(&c.ID, &c.Code, &c.Name, &c.Segment, &c.CreatedAt, &c.ManagerID, &c.PartnerIDs, &x.Partner,
			&callID, &cdr.Direction, &cdr.ManagerID, &cdr.OfferedAt, &cdr.AnsweredAt, &cdr.EndedAt, &ms,
			&cdr.Disposition, &cdr.HangupSide)
		if err == nil && callID != nil {
			cdr.CallID, cdr.ClientID, cdr.Duration = *callID, c.ID, time.Duration(ms)*time.Millisecond
			x.LastCall = &cdr
		}
		return x, err
	})
}

// CallSearch narrows the console's call list; empty fields match everything.
type CallSearch struct {
	ManagerID, ClientID    string
	Direction, Disposition string
	From, To               time.Time // offered in [From, To); zero = open
	Limit                  int       // default 200, at most 1000
	Offset                 int       // rows to skip, for paging
}

// SearchCalls lists CDRs matching a search, newest first.
func (s *Store) SearchCalls(ctx context.Context, f CallSearch) ([]CDR, error) {
	if (f.ClientID != "" && !validUUID(f.ClientID)) || (f.ManagerID != "" && !validUUID(f.ManagerID)) ||
		!callDirections[f.Direction] || !callDispositions[f.Disposition] {
		return []CDR{}, nil
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 200
	}
	limit = min(limit, 1000)
	var from, to *time.Time
	if !f.From.IsZero() {
		from = &f.From
	}
	if !f.To.IsZero() {
		to = &f.To
	}
	rows, err := s.pool.Query(ctx, `SELECT `+cdrColumns+` FROM cdrs
		WHERE ($1::uuid IS NULL OR client_id = $1::uuid) AND ($2::uuid IS NULL OR manager_id = $2::uuid)
		  AND ($3::text IS NULL OR direction = $3) AND ($4::text IS NULL OR disposition = $4)
		  AND ($5::timestamptz IS NULL OR offered_at >= $5) AND ($6::timestamptz IS NULL OR offered_at < $6)
		ORDER BY offered_at DESC NULLS FIRST, call_id LIMIT $7 OFFSET $8`,
		nullUUID(f.ClientID), nullUUID(f.ManagerID), nullText(f.Direction), nullText(f.Disposition), from, to, limit,
		max(f.Offset, 0))
	if err != nil {
		return nil, fmt.Errorf("storage: search calls: %w", err)
	}
	defer rows.Close()
	out := []CDR{}
	for rows.Next() {
		c, err := scanCDR(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: scan cdr: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// DailyCalls is one manager's calls on one day.
type DailyCalls struct {
	Day       time.Time // midnight of the day in the zone asked for
	ManagerID string    // empty: calls nobody answered and no manager was named for
	Calls     int
	Answered  int
	Missed    int // inbound calls nobody answered
}

// CallsPerDay counts calls per manager per day, for days in [from, to) of
// the IANA time zone tz.
func (s *Store) CallsPerDay(ctx context.Context, from, to time.Time, tz string) ([]DailyCalls, error) {
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("storage: time zone %q: %w", tz, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT (offered_at AT TIME ZONE $3)::date::text, coalesce(manager_id::text, ''),
			count(*), count(*) FILTER (WHERE disposition = 'answered'), count(*) FILTER (WHERE disposition = 'missed')
		FROM cdrs WHERE offered_at >= $1 AND offered_at < $2
		GROUP BY 1, 2 ORDER BY 1, 2`, from, to, loc.String())
	if err != nil {
		return nil, fmt.Errorf("storage: calls per day: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DailyCalls, error) {
		var d DailyCalls
		var day string
		if err := r.Scan(&day, &d.ManagerID, &d.Calls, &d.Answered, &d.Missed); err != nil {
			return d, err
		}
		d.Day, err = time.ParseInLocation(time.DateOnly, day, loc)
		return d, err
	})
}
