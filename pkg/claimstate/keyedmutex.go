package claimstate

import "sync"

// keyedMutex serializes work per key (a claim UID) while work on different
// keys runs in parallel. Entries are freed when no goroutine holds or waits
// for them, so memory does not grow with the number of claims ever seen.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func newKeyedMutex() *keyedMutex {
	return &keyedMutex{locks: map[string]*refMutex{}}
}

// Lock locks key and returns the function that unlocks it.
func (k *keyedMutex) Lock(key string) (unlock func()) {
	k.mu.Lock()
	m, ok := k.locks[key]
	if !ok {
		m = &refMutex{}
		k.locks[key] = m
	}
	m.refs++
	k.mu.Unlock()

	m.Lock()
	return func() { k.unlock(key, m) }
}

// TryLock locks key unless a goroutine holds it or waits for it; ok tells
// whether it did.
func (k *keyedMutex) TryLock(key string) (unlock func(), ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, busy := k.locks[key]; busy {
		// An entry exists only while someone holds or waits for it.
		return nil, false
	}
	m := &refMutex{refs: 1}
	m.Lock()
	k.locks[key] = m
	return func() { k.unlock(key, m) }, true
}

func (k *keyedMutex) unlock(key string, m *refMutex) {
	m.Unlock()
	k.mu.Lock()
	m.refs--
	if m.refs == 0 {
		delete(k.locks, key)
	}
	k.mu.Unlock()
}
