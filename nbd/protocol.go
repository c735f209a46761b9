package nbd

// Wire constants of the NBD protocol, named as in the specification
// (NetworkBlockDevice/nbd, doc/proto.md). All integers on the wire are
// big-endian.

// Handshake magics.
const (
	nbdMagic       uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic       uint64 = 0x49484156454f5054 // "IHAVEOPT": server greeting and every option
	optReplyMagic  uint64 = 0x0003e889045565a9 // every fixed-newstyle option reply
	exportNameZero        = 124                // zero padding after NBD_OPT_EXPORT_NAME's reply
)

// Handshake flags (server, 16 bits) and client flags (32 bits).
const (
	flagFixedNewstyle uint16 = 1 << 0
	flagNoZeroes      uint16 = 1 << 1

	clientFlagFixedNewstyle uint32 = 1 << 0
	clientFlagNoZeroes      uint32 = 1 << 1
	clientFlagsKnown               = clientFlagFixedNewstyle | clientFlagNoZeroes
)

// Option types.
const (
	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optPeekExport      uint32 = 4 // withdrawn
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10
	optExtendedHeaders uint32 = 11 // experimental; answered ERR_UNSUP
)

// Option reply types. Errors have bit 31 set.
const (
	repAck         uint32 = 1
	repServer      uint32 = 2
	repInfo        uint32 = 3
	repMetaContext uint32 = 4

	repFlagError        uint32 = 1 << 31
	repErrUnsup                = repFlagError | 1
	repErrPolicy               = repFlagError | 2
	repErrInvalid              = repFlagError | 3
	repErrPlatform             = repFlagError | 4
	repErrTLSReqd              = repFlagError | 5
	repErrUnknown              = repFlagError | 6
	repErrShutdown             = repFlagError | 7
	repErrBlockSizeReqd        = repFlagError | 8
	repErrTooBig               = repFlagError | 9
)

// NBD_INFO types, requested in and answered to NBD_OPT_INFO / NBD_OPT_GO.
const (
	infoExport      uint16 = 0
	infoName        uint16 = 1
	infoDescription uint16 = 2
	infoBlockSize   uint16 = 3
)

// Transmission flags (16 bits), sent with the export size.
const (
	tflagHasFlags        uint16 = 1 << 0
	tflagReadOnly        uint16 = 1 << 1
	tflagSendFlush       uint16 = 1 << 2
	tflagSendFUA         uint16 = 1 << 3
	tflagRotational      uint16 = 1 << 4
	tflagSendTrim        uint16 = 1 << 5
	tflagSendWriteZeroes uint16 = 1 << 6
	tflagSendDF          uint16 = 1 << 7
	tflagCanMultiConn    uint16 = 1 << 8
	tflagSendResize      uint16 = 1 << 9 // experimental; never set
	tflagSendCache       uint16 = 1 << 10
	tflagSendFastZero    uint16 = 1 << 11
)

// Transmission-phase magics.
const (
	requestMagic         uint32 = 0x25609513
	simpleReplyMagic     uint32 = 0x67446698
	structuredReplyMagic uint32 = 0x668e33ef
)

// Request header: magic(4) flags(2) type(2) cookie(8) offset(8) length(4).
const requestHeaderLen = 28

// Command types.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
	cmdBlockStatus uint16 = 7
)

// Command flags.
const (
	cmdFlagFUA        uint16 = 1 << 0
	cmdFlagNoHole     uint16 = 1 << 1
	cmdFlagDF         uint16 = 1 << 2
	cmdFlagReqOne     uint16 = 1 << 3
	cmdFlagFastZero   uint16 = 1 << 4
	cmdFlagPayloadLen uint16 = 1 << 5 // extended headers only; we never negotiate them
)

// Structured reply flags and chunk types.
const (
	replyFlagDone uint16 = 1 << 0

	replyTypeNone        uint16 = 0
	replyTypeOffsetData  uint16 = 1
	replyTypeOffsetHole  uint16 = 2
	replyTypeBlockStatus uint16 = 5
	replyTypeError       uint16 = 1<<15 | 1
	replyTypeErrorOffset uint16 = 1<<15 | 2
)

// Error values of the transmission phase. The spec restricts replies to
// these; anything else is mapped onto them (see errors.go).
const (
	errPerm     uint32 = 1
	errIO       uint32 = 5
	errNoMem    uint32 = 12
	errInval    uint32 = 22
	errNoSpc    uint32 = 28
	errOverflow uint32 = 75
	errNotSup   uint32 = 95
	errShutdown uint32 = 108
)

// base:allocation status flags.
const (
	stateHole uint32 = 1 << 0
	stateZero uint32 = 1 << 1
)

// The one metadata context we implement, and the id we give it.
const (
	metaBaseAllocation   = "base:allocation"
	metaBaseAllocationID = 1
)

// Size constraints advertised with NBD_INFO_BLOCK_SIZE: the spec's defaults,
// so clients that ask and clients that never do are told the same.
//
// What is served is larger: Options.MaxPayload (DefaultMaxPayload). The
// spec lets a server refuse requests above its advertised maximum, but
// clients that negotiated no block size (NBD_OPT_EXPORT_NAME, the kernel
// before it learned NBD_OPT_GO, nbd-tester-client's integrityhuge) send
// READs and WRITEs above 32 MiB, and nbd-server and nbdkit serve them.
const (
	minBlockSize         = 1
	preferredBlockSize   = 4096
	advertisedMaxPayload = 32 << 20
)

// DefaultMaxPayload is the largest READ or WRITE served when
// Options.MaxPayload is zero; MaxMaxPayload bounds what may be configured.
const (
	DefaultMaxPayload = 64 << 20
	MaxMaxPayload     = 256 << 20
)

// Bounds on what a client may make us read during negotiation.
const (
	maxStringLen = 4096 // the spec's limit on export names and other strings
	// maxOptionLen bounds option data we buffer. The largest legitimate
	// option is a metadata-context request with a few long queries; 64 KiB
	// is far above anything a real client sends.
	maxOptionLen = 64 << 10
	// maxOptionDiscard: option data up to this long is read and thrown away
	// so that the client gets NBD_REP_ERR_TOO_BIG; longer is treated as an
	// attack and the connection is closed.
	maxOptionDiscard = 16 << 20
	// maxOptions bounds options per connection (besides the handshake
	// timeout), so a client cannot keep a connection in negotiation forever.
	maxOptions = 4096
)
