package store

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// memStore keeps objects in a map. It exists for unit tests of the layers
// above, so it follows the contract exactly (key rules, ranges, conditional
// writes) but makes no attempt at durability.
//
// ETags are the content's SHA-256, like the file backend: rewriting the same
// bytes gives the same ETag, as a plain S3 PUT does.
type memStore struct {
	name string

	mu   sync.RWMutex
	objs map[string]memObject
}

type memObject struct {
	data    []byte // never modified once stored; Get copies out
	etag    string
	modTime time.Time
}

// NewMem returns an empty in-memory store. Every call returns an independent
// store; nothing is shared between them.
func NewMem() Store { return newMem("mem://") }

func newMem(name string) *memStore {
	return &memStore{name: name, objs: make(map[string]memObject)}
}

func (m *memStore) String() string { return m.name }

func (m *memStore) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	if err := precheck(ctx, key); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	m.mu.RLock()
	obj, ok := m.objs[key]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	start, end, err := clampRange(int64(len(obj.data)), off, length)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return append([]byte{}, obj.data[start:end]...), nil
}

func (m *memStore) Put(ctx context.Context, key string, data []byte) (string, error) {
	if err := precheck(ctx, key); err != nil {
		return "", fmt.Errorf("put %s: %w", key, err)
	}
	obj := newMemObject(data)
	m.mu.Lock()
	m.objs[key] = obj
	m.mu.Unlock()
	return obj.etag, nil
}

func (m *memStore) PutIfAbsent(ctx context.Context, key string, data []byte) (string, error) {
	if err := precheck(ctx, key); err != nil {
		return "", fmt.Errorf("put-if-absent %s: %w", key, err)
	}
	obj := newMemObject(data)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[key]; ok {
		return "", fmt.Errorf("put-if-absent %s: %w", key, ErrExists)
	}
	m.objs[key] = obj
	return obj.etag, nil
}

func (m *memStore) PutIfMatch(ctx context.Context, key string, data []byte, etag string) (string, error) {
	if err := precheck(ctx, key); err != nil {
		return "", fmt.Errorf("put-if-match %s: %w", key, err)
	}
	obj := newMemObject(data)
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.objs[key]
	switch {
	case !ok:
		return "", fmt.Errorf("put-if-match %s: %w", key, ErrNotFound)
	case cur.etag != etag:
		return "", fmt.Errorf("put-if-match %s: %w", key, ErrPrecondition)
	}
	m.objs[key] = obj
	return obj.etag, nil
}

func (m *memStore) Head(ctx context.Context, key string) (Info, error) {
	if err := precheck(ctx, key); err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, err)
	}
	m.mu.RLock()
	obj, ok := m.objs[key]
	m.mu.RUnlock()
	if !ok {
		return Info{}, fmt.Errorf("head %s: %w", key, ErrNotFound)
	}
	return obj.info(key), nil
}

func (m *memStore) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	m.mu.RLock()
	infos := []Info{}
	for key, obj := range m.objs {
		if strings.HasPrefix(key, prefix) {
			infos = append(infos, obj.info(key))
		}
	}
	m.mu.RUnlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	return infos, nil
}

func (m *memStore) Delete(ctx context.Context, key string) error {
	if err := precheck(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	m.mu.Lock()
	delete(m.objs, key)
	m.mu.Unlock()
	return nil
}

func newMemObject(data []byte) memObject {
	return memObject{
		data:    append([]byte{}, data...), // the caller may reuse its buffer
		etag:    contentETag(data),
		modTime: time.Now(),
	}
}

func (o memObject) info(key string) Info {
	return Info{Key: key, Size: int64(len(o.data)), ETag: o.etag, ModTime: o.modTime}
}
