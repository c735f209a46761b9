// Package nbd serves the block devices of a zerofs filesystem over the
// Network Block Device protocol, written against the protocol specification
// (NetworkBlockDevice/nbd, doc/proto.md). It is a thin adapter: every
// command is one or two calls into package fs; no storage logic lives here.
//
// Where things are:
//
//	protocol.go      wire constants
//	options.go       option decoding and option-reply encoding (pure)
//	handshake.go     fixed-newstyle negotiation
//	tls.go           STARTTLS: the three modes, and TLS replies in batches
//	access.go        who may attach what: networks, certificates, rules
//	dial.go          the client side of the handshake (zerofs nbd attach)
//	request.go       request decoding and validation (pure)
//	reply.go         simple and structured reply encoding (pure)
//	transmission.go  a connection: reader, workers, writer
//	commands.go      WRITE, FLUSH, TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS
//	read.go          READ, with structured replies and holes
//	errors.go        mapping filesystem errors to NBD error values
//	exports.go       exports (files in /.nbd) and their management API
//	server.go        Server, Options, Serve, Shutdown
//
// # Exports
//
// Every regular file in /.nbd is an export named after the file (see
// exports.go for the rules: sizes, read-only exports, no default export).
//
// # What is advertised
//
// Handshake flags FIXED_NEWSTYLE and NO_ZEROES. Transmission flags
// HAS_FLAGS, SEND_FLUSH, SEND_CACHE, CAN_MULTI_CONN (fs.Flush is
// filesystem-wide), SEND_DF with structured replies, and for writable
// exports SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES and SEND_FAST_ZERO
// (zeroing punches a hole: one metadata operation at any length); READ_ONLY
// for exports whose file lacks the owner write bit. Structured replies and
// the base:allocation metadata context are offered, and STARTTLS
// (Options.TLSMode); extended headers are not. Block sizes: minimum 1,
// preferred 4096, maximum payload 32 MiB (the spec's defaults; up to
// Options.MaxPayload is served, see protocol.go).
//
// # Decisions where the spec leaves a choice
//
// Negotiation (details in handshake.go and tls.go): STARTTLS per the TLS
// mode (off: NBD_REP_ERR_POLICY); an unknown or invalid export name is
// NBD_REP_ERR_UNKNOWN (NBD_OPT_EXPORT_NAME closes the connection, having no
// error reply); option data above 64 KiB is discarded and refused with
// NBD_REP_ERR_TOO_BIG up to 16 MiB and closes the connection beyond; at most
// 4096 options and Options.HandshakeTimeout per negotiation.
//
// Requests (details in request.go, checkRequest):
//   - Past the end: ENOSPC for WRITE and WRITE_ZEROES, EINVAL otherwise.
//   - Zero-length READ, WRITE, TRIM, WRITE_ZEROES and CACHE succeed as
//     no-ops; zero-length BLOCK_STATUS is EINVAL.
//   - READ above Options.MaxPayload (64 MiB): EINVAL (simple replies) or
//     EOVERFLOW (structured). WRITE above it: EINVAL, its payload read and
//     discarded, never buffered, so the stream stays in sync.
//   - Unknown commands and undocumented flags: EINVAL, connection kept
//     (an unknown command is assumed to carry no payload; if it did, the
//     next header fails the magic check). FUA is accepted on every command.
//   - FLUSH with a nonzero offset or length: EINVAL.
//   - WRITE_ZEROES with FAST_ZERO and NO_HOLE: ENOTSUP; without NO_HOLE it
//     punches a hole. With NO_HOLE zeros are written, atomically per 32 MiB.
//   - A bad request magic ends the connection after the replies to
//     requests already read are sent.
//
// Replies: successful non-READ replies are simple even with structured
// replies; errors are NBD_REPLY_TYPE_ERROR chunks with a message when
// structured replies were negotiated. Structured READs send OFFSET_HOLE for
// the holes fs.ReadShared reports while reading (whole aligned 4 KiB blocks;
// the zero edges of a hole go out as data), OFFSET_DATA otherwise, the last
// chunk flagged DONE; with DF one chunk. BLOCK_STATUS reports holes as
// HOLE|ZERO and data as 0, and may describe a prefix of the range.
//
// Errors from package fs map as errors.go describes: EIO→EIO,
// ENOSPC/EFBIG/EDQUOT→ENOSPC, EROFS→EPERM (EIO for FLUSH), EPERM/EACCES→EPERM,
// EINVAL→EINVAL, cancelled→ESHUTDOWN, anything else→EIO.
//
// Durability: FLUSH, and FUA on WRITE, TRIM and WRITE_ZEROES, reply only
// after fs.Flush, which returns once the WAL append covering every write
// completed before it is done (DESIGN.md rule 1). Each WRITE is one
// fs.Write, which the filesystem never tears. NBD_CMD_DISC flushes too,
// though the spec does not ask for it.
//
// # Concurrency
//
// Per connection: one reader, Options.Workers workers (default 32), one
// writer that batches replies into one writev. Replies go out in completion
// order. Payload memory per connection is bounded by
// Options.ConnBufferBytes. No lock is held per export. Shutdown stops
// reading, lets requests already read finish and their replies go out, then
// closes (a lingering close, so that a reset does not destroy replies the
// client has not read).
package nbd
