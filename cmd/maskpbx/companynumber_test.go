package main

import (
	"reflect"
	"testing"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx"
)

func TestParseCompanyNumbers(t *testing.T) {
	numbers := masking.NewNormalizer("RU")
	for _, tc := range []struct {
		name, in string
		want     []pbx.CompanyNumber
		bad      bool
	}{
		{"empty", "", nil, false},
		{"one, as before", "+74950000000", []pbx.CompanyNumber{{Number: "+74950000000"}}, false},
		{"national spelling", "8 (495) 000-00-00", []pbx.CompanyNumber{{Number: "+74950000000"}}, false},
		{"list with teams", "+74950000000=sales, 88120000000 = support,+74951111111",
			[]pbx.CompanyNumber{{Number: "+74950000000", Team: "sales"}, {Number: "+78120000000", Team: "support"}, {Number: "+74951111111"}}, false},
		{"not a number", "call us", nil, true},
		{"team without number", "=sales", nil, true},
		{"twice in two spellings", "+74950000000=sales,84950000000=support", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCompanyNumbers(tc.in, numbers)
			if (err != nil) != tc.bad {
				t.Fatalf("err %v, want error: %v", err, tc.bad)
			}
			if !tc.bad && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
