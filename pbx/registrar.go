package pbx

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// The registrar (RFC 3261 section 10.3): a phone REGISTERs
// sip:<domain> with To sip:<username>@<domain>, authenticates with digest,
// and its Contact bindings go to the Registrations store, one per contact.

// registerRequest is a REGISTER after syntax checks, before authentication.
type registerRequest struct {
	user     string
	callID   string
	cseq     uint32
	star     bool               // Contact: * (remove all bindings)
	contacts []requestedBinding // empty: only list the bindings
}

// requestedBinding is one Contact of a REGISTER with the expiry asked for.
type requestedBinding struct {
	uri     string
	expires time.Duration // before clamping; 0 removes the binding
}

func (s *Server) handleRegister(req *sip.Request, tx sip.ServerTransaction) {
	ctx, cancel := context.WithTimeout(s.ctx, requestTimeout)
	defer cancel()
	res, err := s.register(ctx, req)
	if err != nil {
		s.respondError(req, tx, err)
		return
	}
	s.respond(req, tx, res)
}

func (s *Server) register(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	r, err := s.parseRegister(req)
	if err != nil {
		return nil, err
	}
	creds, err := s.auth.authenticate(ctx, req, r.user)
	switch {
	case errors.Is(err, errAuthFailed):
		s.authFailed(req, r.user)
	case errors.Is(err, errInactiveUser):
		s.logger.Info("sip registration of a dismissed manager refused",
			zap.String("manager_id", creds.ManagerID),
			zap.String("username", creds.Username),
			zap.String("source", req.Source()))
		s.dismissedTry(ctx, req, creds.ManagerID)
	}
	if err != nil {
		return nil, err
	}
	if err := s.updateBindings(ctx, req, creds, r); err != nil {
		return nil, err
	}
	current, err := s.regs.Contacts(ctx, creds.ManagerID)
	if err != nil {
		return nil, err
	}

	s.logger.Debug("sip registered",
		zap.String("manager_id", creds.ManagerID),
		zap.String("username", creds.Username),
		zap.String("source", req.Source()),
		zap.Int("bindings", len(current)))
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	now := s.now()
	for _, b := range current {
		left := ceilSeconds(b.ExpiresAt.Sub(now)) / time.Second
		res.AppendHeader(sip.NewHeader("Contact", "<"+b.Contact+">;expires="+strconv.Itoa(int(left))))
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(sipDateFormat)))
	if outboundFlow(req) {
		res.AppendHeader(sip.NewHeader("Require", "outbound"))
		res.AppendHeader(sip.NewHeader("Flow-Timer", strconv.Itoa(int(flowTimer/time.Second))))
	}
	return res, nil
}

// flowTimer is how often (at most) a phone on a TCP or TLS flow should send
// its CRLF keep-alive (RFC 5626 §5.4): well under the NAT bindings of
// common routers. The transport layer answers each with a CRLF.
const flowTimer = 120 * time.Second

// outboundFlow reports whether a REGISTER asks for RFC 5626 outbound on a
// connection: Supported: outbound and a Contact with reg-id. The PBX keeps
// to that already for TCP and TLS (a phone's calls go on the connection it
// registered on), so it says so; over UDP it would need STUN keep-alives
// on the SIP port, which it does not answer, so it stays silent there.
func outboundFlow(req *sip.Request) bool {
	if !sip.IsReliable(req.Transport()) {
		return false
	}
	supported := false
	for _, v := range headerValues(req, "Supported") {
		for _, opt := range strings.Split(v, ",") {
			supported = supported || strings.EqualFold(strings.TrimSpace(opt), "outbound")
		}
	}
	if !supported {
		return false
	}
	for _, v := range headerValues(req, "Contact") {
		if strings.Contains(strings.ToLower(v), ";reg-id=") {
			return true
		}
	}
	return false
}

// sipDateFormat is RFC 1123 in GMT, as RFC 3261 20.17 wants for Date.
const sipDateFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

// authFailed counts a wrong credential from the request's source and blocks
// the source when it has failed too often.
func (s *Server) authFailed(req *sip.Request, user string) {
	s.stats.authFailures.Add(1)
	if !s.limiter.fail(sourceIP(req)) {
		return
	}
	s.stats.sourcesBlocked.Add(1)
	s.logger.Warn("sip source blocked after failed authentication",
		zap.String("source", sourceIP(req)),
		zap.String("username", user),
		zap.Int("failures", s.cfg.AuthFailLimit),
		zap.Duration("window", s.cfg.AuthFailWindow),
		zap.Duration("blocked_for", s.cfg.AuthBlockFor))
}

// dismissedTry tells Config.DismissedTry of a dismissed manager's
// credentials tried.
func (s *Server) dismissedTry(ctx context.Context, req *sip.Request, managerID string) {
	if s.cfg.DismissedTry != nil {
		s.cfg.DismissedTry(ctx, req.Method.String(), managerID, sourceIP(req))
	}
}

// parseRegister checks what can be checked before authentication: syntax,
// the served domain and required extensions.
func (s *Server) parseRegister(req *sip.Request) (registerRequest, error) {
	var r registerRequest
	if require := headerValues(req, "Require"); len(require) > 0 {
		return r, fmt.Errorf("%w: %q", errBadExtension, require)
	}
	to, callID, cseq := req.To(), req.CallID(), req.CSeq()
	switch {
	case to == nil || to.Address.User == "":
		return r, fmt.Errorf("%w: To has no user", errMalformed)
	case callID == nil || cseq == nil:
		return r, fmt.Errorf("%w: no Call-ID or CSeq", errMalformed)
	case cseq.MethodName != sip.REGISTER:
		return r, fmt.Errorf("%w: CSeq method is not REGISTER", errMalformed)
	case !s.servesHost(req.Recipient.Host):
		return r, fmt.Errorf("%w: Request-URI host %.64q", errUnknownDomain, req.Recipient.Host)
	case !s.servesHost(to.Address.Host):
		return r, fmt.Errorf("%w: To host %.64q", errUnknownDomain, to.Address.Host)
	}
	r.user, r.callID, r.cseq = to.Address.User, callID.Value(), cseq.SeqNo

	defaultExpires := s.cfg.RegisterDefaultExpires
	if values := headerValues(req, "Expires"); len(values) > 0 {
		d, err := parseExpires(values[0])
		if err != nil {
			return r, fmt.Errorf("%w: Expires: %w", errMalformed, err)
		}
		defaultExpires = d
	}

	for _, v := range headerValues(req, "Contact", "m") {
		if v == "*" {
			r.star = true
			continue
		}
		b, err := parseBinding(v, defaultExpires)
		if err != nil {
			return r, fmt.Errorf("%w: Contact: %w", errMalformed, err)
		}
		r.contacts = append(r.contacts, b)
	}
	if r.star {
		// RFC 3261 10.3 step 6: "*" only alone and only with Expires: 0.
		if len(r.contacts) > 0 || defaultExpires != 0 || len(headerValues(req, "Expires")) == 0 {
			return r, fmt.Errorf("%w: Contact * needs Expires: 0 and no other contact", errMalformed)
		}
	}
	return r, nil
}

// parseBinding reads one Contact value.
func parseBinding(v string, defaultExpires time.Duration) (requestedBinding, error) {
	var uri sip.Uri
	params := sip.NewParams()
	if _, err := sip.ParseAddressValue(v, &uri, &params); err != nil {
		return requestedBinding{}, err
	}
	if uri.Scheme != "sip" && uri.Scheme != "sips" || uri.Host == "" {
		return requestedBinding{}, errors.New("not a sip: or sips: URI with a host")
	}
	b := requestedBinding{uri: uri.String(), expires: defaultExpires}
	if e, ok := params.Get("expires"); ok {
		d, err := parseExpires(e)
		if err != nil {
			return requestedBinding{}, fmt.Errorf("expires param: %w", err)
		}
		b.expires = d
	}
	return b, nil
}

// parseExpires reads delta-seconds; values beyond 2^32-1 mean 2^32-1
// (RFC 3261 20.19). The registrar clamps them later.
func parseExpires(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, fmt.Errorf("not delta-seconds: %.16q", v)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		n = math.MaxUint32 // only overflow remains possible
	}
	return time.Duration(n) * time.Second, nil
}

// servesHost reports whether a Request-URI or To host names this server.
func (s *Server) servesHost(host string) bool {
	host = strings.ToLower(strings.Trim(host, "[]"))
	for _, h := range s.hosts {
		if host == strings.Trim(h, "[]") {
			return true
		}
	}
	return false
}

// updateBindings applies r to the manager's bindings: all checks first, so a
// refused REGISTER changes nothing.
func (s *Server) updateBindings(ctx context.Context, req *sip.Request, creds SIPCredentials, r registerRequest) error {
	if r.star {
		return s.regs.RemoveManager(ctx, creds.ManagerID)
	}
	if len(r.contacts) == 0 {
		return nil
	}
	current, err := s.regs.Contacts(ctx, creds.ManagerID)
	if err != nil {
		return err
	}
	existing := make(map[string]Registration, len(current))
	for _, b := range current {
		existing[b.Contact] = b
	}
	for _, b := range r.contacts {
		if old, ok := existing[b.uri]; ok && old.CallID == r.callID && r.cseq <= old.CSeq {
			return fmt.Errorf("%w: CSeq %d after %d", errOutOfOrder, r.cseq, old.CSeq)
		}
		if b.expires != 0 && b.expires < s.cfg.RegisterMinExpires {
			return fmt.Errorf("%w: %s", errIntervalTooBrief, b.expires)
		}
	}

	now := s.now()
	for _, b := range r.contacts {
		if b.expires == 0 {
			if err := s.regs.Remove(ctx, creds.ManagerID, b.uri); err != nil {
				return err
			}
			continue
		}
		reg := Registration{
			ManagerID: creds.ManagerID,
			Username:  creds.Username,
			Contact:   b.uri,
			Source:    req.Source(),
			Transport: req.Transport(),
			ExpiresAt: now.Add(min(b.expires, s.cfg.RegisterMaxExpires)),
			CallID:    r.callID,
			CSeq:      r.cseq,
		}
		if cc := s.calls; cc != nil && cc.cfg.Node != "" {
			reg.Node, reg.NodeAddr = cc.cfg.Node, net.JoinHostPort(cc.contact.Host, strconv.Itoa(cc.contact.Port))
		}
		if err := s.regs.Put(ctx, reg); err != nil {
			return err
		}
	}
	return nil
}
