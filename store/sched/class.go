package sched

import (
	"context"
	"fmt"
)

// Class is the priority class of a store request, carried by its context.
// The classes are ordered: a lower value is admitted first when requests
// wait for a slot (see limit.go for the whole policy).
type Class uint8

const (
	// Demand requests have someone waiting on them now: a client's read
	// that missed the caches, a WAL append a client's FLUSH waits for,
	// the open and recovery of the filesystem. The default for a context
	// that names no class.
	Demand Class = iota
	// ReadAhead requests fetch what a client is expected to ask for soon.
	// Useful when early, worthless when they delay a Demand request.
	ReadAhead
	// Background requests are throughput work nobody waits on: garbage
	// collection, checkpoints, the head watch.
	Background

	// NumClasses is the number of classes, for arrays indexed by Class.
	NumClasses = 3
)

var classNames = [NumClasses]string{"demand", "readahead", "background"}

// String is the class's name as used in metric labels: "demand",
// "readahead" or "background".
func (c Class) String() string {
	if c < NumClasses {
		return classNames[c]
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

type classKey struct{}

// WithClass returns a context whose store requests run in class c. It is
// meant to be set once, where work of a kind starts (the read-ahead
// goroutine, the GC loop), and inherited by everything below it.
func WithClass(ctx context.Context, c Class) context.Context {
	if c >= NumClasses {
		panic(fmt.Sprintf("sched: WithClass with an unknown %v", c))
	}
	return context.WithValue(ctx, classKey{}, c)
}

// ClassOf returns the class ctx carries, or Demand if it carries none:
// untagged work is treated as work someone waits for, so forgetting a tag
// can cost fairness to background work, never a client's latency.
func ClassOf(ctx context.Context) Class {
	if c, ok := ctx.Value(classKey{}).(Class); ok {
		return c
	}
	return Demand
}
