// Package protocol holds the wire formats that every part of Sluice shares:
// the nsqd "V2" frames and commands, the message codec, the topic and channel
// name rules and (in lookup.go) the nsqlookupd "V1" registration messages.
//
// Everything here is pure encode/decode over byte slices: no sockets, no server
// state, no goroutines. Parsers never trust a size they read: every length is
// checked against its limit before anything is allocated for it, and every
// parser has a fuzz target beside it.
package protocol
