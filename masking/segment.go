package masking

import "slices"

// SegmentRule is what routing needs of a client's segment.
type SegmentRule struct {
	// Restricted: only Allowed managers ring for the segment's clients.
	Restricted bool
	Allowed    []string
	// Overflow is the segment supervisor whose phone rings instead of the
	// team when the client's own managers don't answer; "" for the team.
	Overflow string
}

// RingOrderInSegment is RingOrder under the client's segment rule: in a
// restricted segment only its permitted managers ring (the team is cut to
// them), and with an overflow the supervisor rings last instead of the team.
func RingOrderInSegment(a Assignment, team []string, rule SegmentRule, eligible func(managerID string) bool) [][]string {
	fallback := team
	if rule.Overflow != "" {
		fallback = []string{rule.Overflow}
	}
	return RingOrder(a, fallback, func(id string) bool {
		if eligible != nil && !eligible(id) {
			return false
		}
		return id == rule.Overflow || !rule.Restricted || slices.Contains(rule.Allowed, id)
	})
}
