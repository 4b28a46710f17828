package masking

// Assignment says which managers own a client: the primary manager and his
// partners. It is the whole rule of "no reach without assignment".
type Assignment struct {
	Primary  string   // manager id
	Partners []string // manager ids
}

// MayReach reports whether a manager may call this client or be put through
// to him: only the primary or a partner. An empty id never matches, so an
// unassigned client or an unauthenticated caller is refused.
func (a Assignment) MayReach(managerID string) bool {
	if managerID == "" {
		return false
	}
	if managerID == a.Primary {
		return true
	}
	for _, p := range a.Partners {
		if p == managerID {
			return true
		}
	}
	return false
}

// RingOrder returns the ring steps for a call from the client: the primary
// first, then the partners together, then the fallback group (the team)
// together, so the client reaches the people who know him before anyone
// else. Only managers for which eligible returns true (active and
// registered) are included; nil eligible admits everyone. A manager appears
// at most once, in his earliest step; empty ids and empty steps are dropped.
func RingOrder(a Assignment, fallback []string, eligible func(managerID string) bool) [][]string {
	seen := map[string]bool{"": true}
	step := func(ids []string) []string {
		var out []string
		for _, id := range ids {
			if seen[id] {
				continue
			}
			seen[id] = true
			if eligible == nil || eligible(id) {
				out = append(out, id)
			}
		}
		return out
	}
	var order [][]string
	for _, ids := range [][]string{{a.Primary}, a.Partners, fallback} {
		if s := step(ids); len(s) > 0 {
			order = append(order, s)
		}
	}
	return order
}
