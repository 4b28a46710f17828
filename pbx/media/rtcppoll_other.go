//go:build !linux

package media

// rtcpWatch: without epoll every relay reads its RTCP on goroutines of its
// own (see rtcppoll_linux.go).
type rtcpWatch struct{}

func (*rtcpWatch) start(*Relay) bool { return false }
func (*rtcpWatch) stop()             {}
