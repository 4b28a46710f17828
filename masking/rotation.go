package masking

import (
	"slices"
	"sort"
)

// RotationClient is a client a rotation may move: his primary manager now
// and the managers who held him recently (the current one included).
type RotationClient struct {
	ID      string
	Primary string
	Recent  []string
	// Permitted says whether a manager may hold him (his segment's rule);
	// nil permits everyone.
	Permitted func(managerID string) bool
}

// RotationMove is one client going from one primary manager to another.
type RotationMove struct {
	ClientID, From, To string
}

// PlanRotation gives each client, in order, to another of managers: never
// one who held him recently, only one permitted for him, the least loaded
// first (ties by id, so a plan is the same for the same input). load is
// each manager's count of primary clients now; the plan keeps it current as
// clients move, so one rotation spreads them. Clients nobody may take stay
// where they are and come back in skipped.
func PlanRotation(clients []RotationClient, managers []string, load map[string]int) (moves []RotationMove, skipped []string) {
	count := make(map[string]int, len(managers))
	for _, m := range managers {
		count[m] = load[m]
	}
	candidates := append([]string(nil), managers...)
	sort.Strings(candidates)
	for _, c := range clients {
		best := ""
		for _, m := range candidates {
			if m == c.Primary || slices.Contains(c.Recent, m) || (c.Permitted != nil && !c.Permitted(m)) {
				continue
			}
			if best == "" || count[m] < count[best] {
				best = m
			}
		}
		if best == "" {
			skipped = append(skipped, c.ID)
			continue
		}
		moves = append(moves, RotationMove{ClientID: c.ID, From: c.Primary, To: best})
		count[best]++
		if _, ok := count[c.Primary]; ok {
			count[c.Primary]--
		}
	}
	return moves, skipped
}
