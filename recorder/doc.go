// Package recorder owns call metadata and audio: the SIPREC recording server,
// the CDR writer fed by call events, and the replay API.
package recorder
