// Package pbx is the SIP side of maskpbx, built on sipgo: the registrar, B2BUA
// call control and (in pbx/media) the RTP relay. It asks masking for routing
// decisions and never touches SQL itself; stores are injected as interfaces.
package pbx
