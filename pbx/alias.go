package pbx

import (
	"context"
	"errors"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/ivr"
	"github.com/maskpbx/maskpbx/storage"
)

// Alias numbers (CallConfig.AliasNumbers): a pool of the company's DIDs on
// the trunk. Each (manager, client) pair gets a sticky alias: the manager's
// mobile is rung from it, so the phone's call log holds the alias, and a
// call from that mobile to the alias connects straight to the client, no
// code to type. A call to an alias from anyone else is a call to the
// company number. When the pair ends (reassignment, dismissal) storage
// releases the alias at once: the mobile calling it hears that the number
// is no longer in service; another pair gets it only after the quarantine.

// calledAlias reports whether an INVITE's Request-URI is an alias number,
// as the company number it then counts as (for every team).
func (cc *callControl) calledAlias(req *sip.Request) (CompanyNumber, bool) {
	if len(cc.aliases) == 0 {
		return CompanyNumber{}, false
	}
	n, err := cc.cfg.Numbers.Normalize(req.Recipient.User)
	if err != nil || !cc.aliases[n] {
		return CompanyNumber{}, false
	}
	return CompanyNumber{Number: n}, true
}

// mobileCallerID is the caller ID a manager's mobile is rung with for a
// call of client (nil: not a client): the pair's alias when there is a
// pool and the manager may reach the client, else company.
func (cc *callControl) mobileCallerID(ctx context.Context, managerID string, client *storage.Client, company string, logger *zap.Logger) string {
	if client == nil || len(cc.aliases) == 0 ||
		!(masking.Assignment{Primary: client.ManagerID, Partners: client.PartnerIDs}).MayReach(managerID) {
		return company
	}
	alias, err := cc.cfg.Router.Store.PairAlias(ctx, managerID, client.ID, cc.cfg.AliasNumbers, cc.cfg.AliasQuarantine)
	switch {
	case errors.Is(err, storage.ErrNoAlias):
		logger.Warn("no alias number free; the mobile rings from the company number")
		return company
	case err != nil:
		logger.Error("alias lookup failed; the mobile rings from the company number", zap.Error(err))
		return company
	}
	return alias
}

// aliasTarget is the client a manager's mobile reaches by calling alias:
// handled is false when the alias is not his pair's (then the call is one to
// the company number). ok is false, after the "no longer in service"
// prompt and an audit row, when it was his pair's but the pair has ended.
func (cc *callControl) aliasTarget(c *call, sess *ivr.Session, managerID, alias string) (target clientTarget, ok, handled bool) {
	if !cc.aliases[alias] {
		return clientTarget{}, false, false
	}
	store := cc.cfg.Router.Store
	a, err := store.AliasByNumber(c.ctx, alias)
	if err != nil || a.ManagerID != managerID {
		return clientTarget{}, false, false
	}
	if a.ReleasedAt == nil && a.ClientID != "" {
		client, err := store.Client(c.ctx, a.ClientID)
		if err == nil {
			target, err = cc.reachClient(c.ctx, managerID, client)
		}
		if err == nil {
			return target, true, true
		}
		if errors.Is(err, ErrOutsideHours) { // audited as call.outside_hours
			c.logger.Warn("mobile called the alias of a client outside his segment's working hours")
			_ = sess.Play(c.ctx, cc.cfg.Prompts.Clip(cc.promptLanguage(), ivr.PromptGoodbye))
			return clientTarget{}, false, true
		}
	}
	if err := store.Audit(c.ctx, storage.AuditEntry{Actor: "manager:" + managerID, Action: "call.mobile_dial",
		Object: "manager:" + managerID, Reason: "refused: alias no longer in service"}); err != nil {
		c.logger.Error("audit failed", zap.Error(err))
	}
	c.logger.Warn("mobile called the alias of a pair that has ended")
	_ = sess.Play(c.ctx, cc.cfg.Prompts.Clip(cc.promptLanguage(), ivr.PromptNotInService))
	return clientTarget{}, false, true
}
