package pbx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"go.uber.org/zap"
)

// TrunkAuth are the credentials the SIP provider gave us: the PBX registers
// with them (trunkreg.go) and answers the provider's digest challenges to
// the requests it sends the trunk (INVITE, BYE, re-INVITE). The password is
// held here and nowhere else; it is never logged.
type TrunkAuth struct {
	Username string // the account: the user of To and From in REGISTER
	AuthUser string // the digest username, if the provider gives one apart; default Username
	Password string
	// Realm, if set, is the only realm whose challenges are answered (a
	// provider behind a proxy chain may meet other realms), and the domain
	// of our address of record; default the trunk's host.
	Realm string
}

// Enabled says whether there are credentials to answer challenges with.
func (a *TrunkAuth) Enabled() bool { return a != nil && a.Username != "" }

func (a *TrunkAuth) digestUser() string {
	if a.AuthUser != "" {
		return a.AuthUser
	}
	return a.Username
}

// errNoChallenge means a 401/407 carried no digest challenge we can answer
// (no header, another realm, an algorithm other than MD5 and SHA-256).
var errNoChallenge = errors.New("pbx: no digest challenge we can answer")

// challengeAnswered is what answering a challenge gave: the header to add
// to the retried request, and whether the challenge said our last nonce was
// only stale (then the credentials were right: one more try is no loop).
type challengeAnswered struct {
	header sip.Header
	stale  bool
}

// answerChallenge builds Authorization (to a 401) or Proxy-Authorization (to
// a 407) for req from the challenges in res. Of several challenges (RFC
// 8760: one per algorithm) the first we can answer is taken.
func (a *TrunkAuth) answerChallenge(req *sip.Request, res *sip.Response) (challengeAnswered, error) {
	challengeName, answerName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == sip.StatusProxyAuthRequired {
		challengeName, answerName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	for _, h := range res.GetHeaders(challengeName) {
		chal, err := digest.ParseChallenge(h.Value())
		if err != nil || !answerable(chal) {
			continue
		}
		if a.Realm != "" && !strings.EqualFold(chal.Realm, a.Realm) {
			continue
		}
		body := req.Body()
		cred, err := digest.Digest(chal, digest.Options{
			Method:   string(req.Method),
			URI:      req.Recipient.String(),
			Username: a.digestUser(),
			Password: a.Password,
			Count:    1,
			GetBody:  func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
		})
		if err != nil {
			continue
		}
		return challengeAnswered{header: sip.NewHeader(answerName, cred.String()), stale: chal.Stale}, nil
	}
	return challengeAnswered{}, errNoChallenge
}

// answerable says whether we answer a challenge: MD5 or SHA-256 (RFC 8760),
// with no qop or qop auth/auth-int.
func answerable(c *digest.Challenge) bool {
	switch strings.ToUpper(c.Algorithm) {
	case "", "MD5", "SHA-256":
	default:
		return false
	}
	return digest.CanDigest(c)
}

// maxAuthTries bounds the challenges one request answers: the first, and a
// stale nonce after it. A challenge to our credentials that is not stale
// means they are wrong, and the attempt ends there: never a loop.
const maxAuthTries = 2

// mayRetry says whether a request that has answered tries challenges may
// answer one more, given whether the new one only calls its nonce stale.
func mayRetry(tries int, stale bool) bool {
	return tries == 0 || stale && tries < maxAuthTries
}

// withCredentials is req resent as a new transaction answering res's
// challenge: the same Call-ID, tags and body, a new branch (sipgo adds the
// Via) and CSeq seq (RFC 3261 22.2).
func withCredentials(req *sip.Request, seq uint32, answer sip.Header) *sip.Request {
	next := req.Clone()
	for next.RemoveHeader("Via") {
	}
	for next.RemoveHeader("Authorization") {
	}
	for next.RemoveHeader("Proxy-Authorization") {
	}
	if cseq := next.CSeq(); cseq != nil {
		cseq.SeqNo = seq
	}
	next.AppendHeader(answer)
	next.SetTransport(req.Transport())
	next.SetDestination(req.Destination())
	return next
}

// requestInDialog sends a request inside the dialog d and returns its
// final response. A dialog with the trunk (d.auth set) answers the
// provider's 401/407 with our credentials, once per challenge; the
// response to the last try is returned. This is the path of BYE and of any
// re-INVITE or UPDATE we send the trunk.
func (cc *callControl) requestInDialog(ctx context.Context, d *dialog, req *sip.Request, logger *zap.Logger) (*sip.Response, error) {
	for tries := 0; ; tries++ {
		res, err := cc.finalResponse(ctx, req)
		if err != nil || d.auth == nil || (res.StatusCode != 401 && res.StatusCode != 407) {
			return res, err
		}
		answer, err := d.auth.answerChallenge(req, res)
		if err != nil || !mayRetry(tries, answer.stale) {
			cc.trunkAuthRefused(logger, req.Method, res.StatusCode, err)
			return res, nil
		}
		req = withCredentials(req, d.nextSeq(), answer.header)
	}
}

// finalResponse sends req as a new client transaction and waits for its
// final response.
func (cc *callControl) finalResponse(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := cc.clientFor(req.Transport()).TransactionRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		select {
		case res, ok := <-tx.Responses():
			if !ok {
				return nil, fmt.Errorf("pbx: %s: no final response", req.Method)
			}
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("pbx: %s: no final response", req.Method)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// trunkAuthRefused records that the trunk refused our credentials (or
// challenged in a way we can't answer): an error to the log, a count for
// /metrics. Never the password.
func (cc *callControl) trunkAuthRefused(logger *zap.Logger, method sip.RequestMethod, status int, err error) {
	cc.trunkAuthFailures.Add(1)
	fields := []zap.Field{zap.String("method", string(method)), zap.Int("status", status)}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	logger.Error("the trunk refused our credentials (check --trunk-username, --trunk-auth-user, --trunk-password, --trunk-realm)", fields...)
}
