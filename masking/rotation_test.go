package masking

import (
	"reflect"
	"testing"
)

func TestPlanRotation(t *testing.T) {
	onlyAB := func(id string) bool { return id == "a" || id == "b" }
	tests := []struct {
		name        string
		clients     []RotationClient
		managers    []string
		load        map[string]int
		wantMoves   []RotationMove
		wantSkipped []string
	}{
		{
			name:      "least loaded first, ties by id",
			clients:   []RotationClient{{ID: "1", Primary: "a", Recent: []string{"a"}}, {ID: "2", Primary: "a", Recent: []string{"a"}}},
			managers:  []string{"c", "b", "a"},
			load:      map[string]int{"a": 2, "b": 0, "c": 1},
			wantMoves: []RotationMove{{"1", "a", "b"}, {"2", "a", "b"}},
		},
		{
			name:      "load follows the plan",
			clients:   []RotationClient{{ID: "1", Primary: "a"}, {ID: "2", Primary: "a"}, {ID: "3", Primary: "a"}},
			managers:  []string{"a", "b", "c"},
			load:      map[string]int{"a": 3},
			wantMoves: []RotationMove{{"1", "a", "b"}, {"2", "a", "c"}, {"3", "a", "b"}},
		},
		{
			name:      "never back to a recent holder",
			clients:   []RotationClient{{ID: "1", Primary: "a", Recent: []string{"a", "b"}}},
			managers:  []string{"a", "b", "c"},
			load:      map[string]int{"c": 9},
			wantMoves: []RotationMove{{"1", "a", "c"}},
		},
		{
			name:        "only permitted managers; nobody left is skipped",
			clients:     []RotationClient{{ID: "1", Primary: "a", Permitted: onlyAB}, {ID: "2", Primary: "b", Recent: []string{"a"}, Permitted: onlyAB}},
			managers:    []string{"a", "b", "c"},
			wantMoves:   []RotationMove{{"1", "a", "b"}},
			wantSkipped: []string{"2"},
		},
		{
			name:        "one manager: nobody to move to",
			clients:     []RotationClient{{ID: "1", Primary: "a"}},
			managers:    []string{"a"},
			wantSkipped: []string{"1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			moves, skipped := PlanRotation(tt.clients, tt.managers, tt.load)
			if !reflect.DeepEqual(moves, tt.wantMoves) || !reflect.DeepEqual(skipped, tt.wantSkipped) {
				t.Errorf("PlanRotation = %v, %v; want %v, %v", moves, skipped, tt.wantMoves, tt.wantSkipped)
			}
		})
	}
}
