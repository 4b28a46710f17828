package console

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/storage"
)

// signinLimits: failures count for a quarter of an hour. 20 from one
// address stop it; 5 for one username start a back-off (5 s after the
// newest failure, doubling to 5 min) for addresses the person has never
// signed in from, so a stranger is slowed and the person is not locked out.
// Every attempt is counted before its password is tested.
var signinLimits = storage.SigninLimits{
	Window:    15 * time.Minute,
	PerSource: 20,
	PerUser:   5,
	BaseDelay: 5 * time.Second,
	MaxDelay:  5 * time.Minute,
}

type signinView struct {
	Username  string
	Next      string
	Error     string
	Notice    string
	Token     bool // the bootstrap-token form instead of the password form
	Bootstrap bool // the bootstrap token is configured at all
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	if _, err := c.cfg.Sessions.lookup(r); err == nil {
		http.Redirect(w, r, localNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	bootstrap := c.cfg.Sessions.bootstrapHash != nil
	v := signinView{Next: localNext(r.URL.Query().Get("next")), Token: bootstrap && r.URL.Query().Has("token"),
		Bootstrap: bootstrap}
	lc := c.localeFor(r, nil)
	switch {
	case r.URL.Query().Has("ended"):
		v.Notice = lc.t("signin.ended")
	case r.URL.Query().Has("out"):
		v.Notice = lc.t("signin.signed_out")
	}
	c.signinForm(w, r, http.StatusOK, v)
}

func (c *Console) signinForm(w http.ResponseWriter, r *http.Request, status int, v signinView) {
	if v.Next == "" {
		v.Next = "/console/"
	}
	lc := c.localeFor(r, nil)
	pages, err := c.pagesFor(lc)
	if err != nil {
		c.logger.Error("console: sign-in page", zap.Error(err))
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	vw := view{Lang: lc.lang.Code(), Title: lc.t("signin.title"), Data: v, CSRF: c.cfg.Sessions.signinCSRF(w, r)}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := pages["signin"].t.ExecuteTemplate(w, "layout", vw); err != nil {
		c.logger.Error("console: sign-in page", zap.Error(err))
	}
}

// localNext keeps a post-sign-in redirect inside the console.
func localNext(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") ||
		strings.HasPrefix(next, "/console/signin") {
		return "/console/"
	}
	return next
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	lc := c.localeFor(r, nil)
	if err := r.ParseForm(); err != nil {
		c.signinForm(w, r, http.StatusBadRequest, signinView{Error: lc.t("error.bad_form")})
		return
	}
	v := signinView{Username: strings.TrimSpace(r.PostFormValue("username")), Next: localNext(r.PostFormValue("next")),
		Token: r.PostFormValue("mode") == "token", Bootstrap: c.cfg.Sessions.bootstrapHash != nil}
	ck, err := r.Cookie(signinCookie)
	if err != nil || !validCSRF(ck.Value, r.PostFormValue(csrfField)) {
		v.Error = lc.t("signin.expired")
		c.signinForm(w, r, http.StatusForbidden, v)
		return
	}
	source := clientIP(r)
	name := v.Username
	if v.Token {
		name = "(admin token)"
	}
	ticket, err := c.store.BeginSignin(ctx, name, source, signinLimits)
	if err != nil {
		c.signinError(w, r, v, err)
		return
	}
	if ticket.Attempt == 0 {
		c.logger.Warn("console: sign-in refused by the rate limit", zap.String("source", source),
			zap.String("limit", ticket.Limit))
		wait := int(ticket.RetryAfter.Round(time.Second) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(wait))
		v.Error = lc.n("signin.too_many", max(1, (wait+59)/60))
		c.signinForm(w, r, http.StatusTooManyRequests, v)
		return
	}

	managerID, actor, reason := "", "", ""
	if v.Token {
		token := strings.TrimSpace(r.PostFormValue("token"))
		if b := c.cfg.Sessions.bootstrapHash; b == nil || subtle.ConstantTimeCompare(sha(token), b) != 1 {
			reason = "bad_token"
		}
		actor = api.Principal{Role: storage.RoleAdmin}.Actor()
	} else {
		managerID, actor, reason, err = c.checkPassword(r, v.Username, r.PostFormValue("password"))
		if err != nil {
			c.signinError(w, r, v, err)
			return
		}
	}
	if reason != "" {
		locked := ticket.UserFailures+1 == signinLimits.PerUser || ticket.SourceFailures+1 == signinLimits.PerSource
		if err := c.store.RecordSigninFailure(ctx, storage.SigninFailure{Username: name, Source: source, Reason: reason,
			Locked: locked, Attempt: ticket.Attempt}); err != nil {
			c.signinError(w, r, v, err)
			return
		}
		v.Error = lc.t("signin.wrong")
		if v.Token {
			v.Error = lc.t("signin.wrong_token")
		}
		c.signinForm(w, r, http.StatusUnauthorized, v)
		return
	}
	if err := c.store.SigninSucceeded(ctx, ticket); err != nil {
		c.signinError(w, r, v, err)
		return
	}
	if err := c.cfg.Sessions.open(ctx, w, r, managerID, actor); err != nil {
		c.signinError(w, r, v, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: "", Path: "/console/", MaxAge: -1})
	http.Redirect(w, r, v.Next, http.StatusSeeOther)
}

// checkPassword tests a username and password. reason is empty when they
// are right, else what the audit log records; every wrong answer takes the
// time of one hash, whether or not the account exists.
func (c *Console) checkPassword(r *http.Request, username, password string) (managerID, actor, reason string, err error) {
	acc, err := c.store.WebAccountByUsername(r.Context(), username)
	if errors.Is(err, storage.ErrNotFound) || username == "" {
		_, _ = VerifyPassword(dummyHash(), password)
		return "", "", "unknown_user", nil
	}
	if err != nil {
		return "", "", "", err
	}
	ok, err := VerifyPassword(acc.PasswordHash, password)
	if err != nil {
		c.logger.Error("console: stored password hash unreadable", zap.String("manager_id", acc.Manager.ID), zap.Error(err))
		return "", "", "bad_hash", nil
	}
	switch {
	case !ok:
		return "", "", "bad_password", nil
	case acc.Manager.Status != storage.StatusActive:
		return "", "", "dismissed", nil
	}
	p := api.Principal{Role: acc.Manager.Role, ManagerID: acc.Manager.ID}
	return acc.Manager.ID, p.Actor(), "", nil
}

func (c *Console) signinError(w http.ResponseWriter, r *http.Request, v signinView, err error) {
	lc := c.localeFor(r, nil)
	if errors.Is(err, storage.ErrUnknownManager) {
		v.Error = lc.t("signin.wrong")
		c.signinForm(w, r, http.StatusUnauthorized, v)
		return
	}
	c.logger.Error("console: sign-in failed", zap.Error(err))
	v.Error = lc.t("error.internal")
	c.signinForm(w, r, http.StatusInternalServerError, v)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := c.cfg.Sessions.close(r.Context(), w, r, s); err != nil {
		return err
	}
	http.Redirect(w, r, "/console/signin?out=1", http.StatusSeeOther)
	return nil
}
