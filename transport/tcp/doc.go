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
// The receiver is the authority on its stream's history (its generation
// records, beside the inbox's segments). A shipper carries the records it
// knows at each handshake; the server stores those it lacks, refuses
// conflicting ones, and admits only a shipper of the newest generation:
// an older one is fenced. It takes one shipper per stream at a time, and
// refuses a segment that overlaps one it has or had unless it is an
// identical resend.
//
// The wire protocol (framing, handshake, error codes, security rules) is
// specified in docs/PROTOCOL.md; frame.go and link.go implement the framing.
package tcp
