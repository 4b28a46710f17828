package bus

// The embedded server's permissions, for the external tests (deploy_test.go).
var (
	PBXPermissions      = pbxPermissions
	RecorderPermissions = recorderPermissions
	NewPassword         = newPassword
)
