package admin

import (
	"bytes"
	"io"
	"net/url"
)

type bytesReader struct{ b []byte }

func (r *bytesReader) reader() io.Reader {
	if r == nil {
		return nil
	}
	return bytes.NewReader(r.b)
}

func pathEscape(s string) string { return url.PathEscape(s) }
