package masking

import (
	"reflect"
	"testing"
)

func TestMayReach(t *testing.T) {
	a := Assignment{Primary: "m1", Partners: []string{"m2", "m3"}}
	tests := []struct {
		name    string
		a       Assignment
		manager string
		want    bool
	}{
		{"primary", a, "m1", true},
		{"partner", a, "m3", true},
		{"stranger", a, "m9", false},
		{"empty id", a, "", false},
		{"empty id on unassigned client", Assignment{}, "", false},
		{"empty id with empty partner", Assignment{Primary: "m1", Partners: []string{""}}, "", false},
		{"unassigned client", Assignment{}, "m1", false},
		{"prefix is not a match", a, "m", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.MayReach(tt.manager); got != tt.want {
				t.Errorf("MayReach(%q) = %v, want %v", tt.manager, got, tt.want)
			}
		})
	}
}

func TestRingOrder(t *testing.T) {
	all := func(string) bool { return true }
	except := func(out ...string) func(string) bool {
		return func(id string) bool {
			for _, o := range out {
				if id == o {
					return false
				}
			}
			return true
		}
	}
	a := Assignment{Primary: "p", Partners: []string{"q", "r"}}
	team := []string{"p", "x", "q", "y"}
	tests := []struct {
		name     string
		a        Assignment
		fallback []string
		eligible func(string) bool
		want     [][]string
	}{
		{"all eligible", a, team, all, [][]string{{"p"}, {"q", "r"}, {"x", "y"}}},
		{"nil eligible admits all", a, team, nil, [][]string{{"p"}, {"q", "r"}, {"x", "y"}}},
		{"primary offline", a, team, except("p"), [][]string{{"q", "r"}, {"x", "y"}}},
		{"ineligible primary not rung in fallback", a, []string{"p", "x"}, except("p"), [][]string{{"q", "r"}, {"x"}}},
		{"one partner offline", a, team, except("r"), [][]string{{"p"}, {"q"}, {"x", "y"}}},
		{"no partners keeps team order", Assignment{Primary: "p"}, team, all, [][]string{{"p"}, {"x", "q", "y"}}},
		{"no fallback", a, nil, all, [][]string{{"p"}, {"q", "r"}}},
		{"unassigned rings team", Assignment{}, team, all, [][]string{{"p", "x", "q", "y"}}},
		{"duplicates and empty ids", Assignment{Primary: "p", Partners: []string{"p", "", "q", "q"}}, []string{"", "q", "x", "x"}, all, [][]string{{"p"}, {"q"}, {"x"}}},
		{"nobody eligible", a, team, func(string) bool { return false }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RingOrder(tt.a, tt.fallback, tt.eligible)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RingOrder = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRingOrderInSegment(t *testing.T) {
	a := Assignment{Primary: "p", Partners: []string{"q"}}
	team := []string{"p", "x", "q", "y"}
	tests := []struct {
		name     string
		a        Assignment
		rule     SegmentRule
		eligible func(string) bool
		want     [][]string
	}{
		{"no rule is RingOrder", a, SegmentRule{}, nil, [][]string{{"p"}, {"q"}, {"x", "y"}}},
		{"restricted cuts the team", a, SegmentRule{Restricted: true, Allowed: []string{"p", "q", "y"}}, nil, [][]string{{"p"}, {"q"}, {"y"}}},
		{"restricted never rings a stray holder", a, SegmentRule{Restricted: true, Allowed: []string{"q", "x"}}, nil, [][]string{{"q"}, {"x"}}},
		{"overflow ends at the supervisor", a, SegmentRule{Restricted: true, Allowed: []string{"p", "q", "x"}, Overflow: "s"}, nil, [][]string{{"p"}, {"q"}, {"s"}}},
		{"overflow without restriction", a, SegmentRule{Overflow: "s"}, nil, [][]string{{"p"}, {"q"}, {"s"}}},
		{"a supervisor with no phone: nobody after the partners", a, SegmentRule{Overflow: "s"}, func(id string) bool { return id != "s" }, [][]string{{"p"}, {"q"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RingOrderInSegment(tt.a, team, tt.rule, tt.eligible); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RingOrderInSegment = %q, want %q", got, tt.want)
			}
		})
	}
}
