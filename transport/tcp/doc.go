// Package tcp is ferry's direct link: a shipper sends sealed segments over
// one TCP connection (TLS 1.3 unless explicitly insecure) to a receiver,
// which stores each one durably in a local inbox before acknowledging it.
//
// The shipping side is [Client], a store.Store whose Put returns only once
// the receiver has the segment durably, so the shipper treats a link exactly
// like any other target. The receiving side is [Server]: it authenticates
// the peer, verifies each segment and puts it into its Inbox (a store/dir
// store). It applies nothing; the ordinary receiver applies from the inbox,
// so there is one apply path whatever the transport.
//
// The wire protocol (framing, handshake, error codes, security rules) is
// specified in docs/PROTOCOL.md; frame.go and link.go implement the framing.
package tcp
