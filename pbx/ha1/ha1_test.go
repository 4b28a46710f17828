package ha1

import "testing"

// The expected values were computed independently with coreutils, e.g.
// printf 'Mufasa:testrealm@host.com:Circle Of Life' | md5sum; the MD5 one is
// also the HA1 in RFC 2617's example.
func TestHA1(t *testing.T) {
	tests := []struct {
		name, user, realm, pass string
		md5, sha256             string
	}{
		{
			"rfc 2617 example", "Mufasa", "testrealm@host.com", "Circle Of Life",
			"939e7578ed9e3c518a452acee763bce9",
			"3ba6cd94661c5ef34598040c868f13b8775df29109986be50ad35ae537dd3aa4",
		},
		{
			"pbx phone", "1001", "pbx.example.com", "s3cret",
			"c66da1f7c969de6268c0a7e331185f26",
			"f0636273dac067ac6d55d06de32791da7eb531ab0d76af8d5477995d8512e2e4",
		},
		{
			"all empty", "", "", "",
			"4501c091b0366d76ea3218b6cfdd8097",
			"71546855d6279ef70d20909b292c42c2dcb02cd06bde01485da52d13e304ebf4",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MD5(tt.user, tt.realm, tt.pass); got != tt.md5 {
				t.Errorf("MD5 = %s, want %s", got, tt.md5)
			}
			if got := SHA256(tt.user, tt.realm, tt.pass); got != tt.sha256 {
				t.Errorf("SHA256 = %s, want %s", got, tt.sha256)
			}
		})
	}
}
