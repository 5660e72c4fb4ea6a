package crash

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// childEnv carries the child's configuration (JSON of childConfig). Without
// it TestCrashChild skips, so a plain `go test` never runs it on its own.
const childEnv = "GPUDRA_CRASH_CHILD"

// opPrefix starts every progress line of the child; other output of the
// test binary is ignored by the parent.
const opPrefix = "CRASHOP "

// childMaxLife bounds a child whose parent died without killing it.
const childMaxLife = time.Minute

type childConfig struct {
	Dirs dirs   `json:"dirs"`
	Seed uint64 `json:"seed"`
	// scenario selects the variant (static, dynamic MIG, GPU shares).
	scenario
	// Format is the CDI format of the child's plugin version, which its
	// start-up writes and its new claims get.
	Format specFormat `json:"format"`
}

// event is one progress line of the child. A "done" event is printed only
// after the operation returned nil, so the parent knows that its effect is
// durable; a "begin" without "done" is an operation the kill interrupted.
type event struct {
	Op    string   `json:"op"`    // "ready", "prepare", "unprepare", "fail"
	Phase string   `json:"phase"` // "begin" or "done" (prepare, unprepare)
	UID   string   `json:"uid,omitempty"`
	IDs   []string `json:"ids,omitempty"` // CDI device IDs of a done prepare
	// Prepared lists the claims the child found prepared at start (ready).
	Prepared []string `json:"prepared,omitempty"`
	Err      string   `json:"err,omitempty"`
}

// reporter writes events to stdout, one write(2) per line: a pipe write of
// less than PIPE_BUF bytes is atomic, so a SIGKILL never leaves half a line
// and every line written before the kill reaches the parent.
type reporter struct{ mu sync.Mutex }

func (r *reporter) emit(e event) {
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = os.Stdout.Write(append([]byte(opPrefix), append(b, '\n')...))
}

// TestCrashChild is the plugin process that TestCrashConsistency,
// TestCrashConsistencyClaimSpecs, TestCrashConsistencyLegacySpecs,
// TestCrashConsistencyDynamicMIG and TestCrashConsistencyShares kill: it
// opens the claim state like the start-up of a plugin of its format does
// (openState: the driver-wide and static device CDI specs, checkpoint load
// and reconcile), then prepares and unprepares the fixed claims on several
// goroutines until it is killed.
func TestCrashChild(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		t.Skip("the child process of TestCrashConsistency; it runs only when started by it")
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("%s: %v", childEnv, err)
	}
	rep := &reporter{}
	fail := func(err error) {
		rep.emit(event{Op: "fail", Err: err.Error()})
		os.Exit(3)
	}
	ctx := klog.NewContext(context.Background(), logr.Discard())

	p, err := startPlugin(ctx, cfg.Dirs, cfg.DynamicMIG)
	if err != nil {
		fail(err)
	}
	st, _, loadErrs, err := openState(ctx, cfg.Dirs, p, cfg.Format)
	if err != nil {
		fail(err)
	}
	if len(loadErrs) > 0 {
		fail(fmt.Errorf("checkpoint load errors: %v", loadErrs))
	}
	if r := st.Reconcile(ctx); len(r.Errors) > 0 {
		fail(fmt.Errorf("reconcile: %v", r.Errors))
	}
	prepared := map[string]bool{}
	for _, uid := range st.PreparedClaims() {
		prepared[uid] = true
	}
	rep.emit(event{Op: "ready", Prepared: st.PreparedClaims()})

	claims := scenarioClaims(cfg.scenario)
	for w := range workers {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
		var mine []int
		for i := range claims {
			if i%workers == w {
				mine = append(mine, i)
			}
		}
		held := map[string]bool{}
		for _, i := range mine {
			held[string(claims[i].UID)] = prepared[string(claims[i].UID)]
		}
		go func() {
			for {
				c := claims[mine[rng.IntN(len(mine))]]
				uid := string(c.UID)
				// Mostly alternate; sometimes repeat a prepare, which
				// must be idempotent.
				if held[uid] && rng.IntN(5) != 0 {
					rep.emit(event{Op: "unprepare", Phase: "begin", UID: uid})
					if err := st.Unprepare(ctx, c.Namespace, c.Name, types.UID(uid)); err != nil {
						fail(err)
					}
					held[uid] = false
					rep.emit(event{Op: "unprepare", Phase: "done", UID: uid})
					continue
				}
				rep.emit(event{Op: "prepare", Phase: "begin", UID: uid})
				devs, err := st.Prepare(ctx, c)
				if err != nil {
					fail(err)
				}
				held[uid] = true
				var ids []string
				for _, d := range devs {
					ids = append(ids, d.CDIDeviceIDs...)
				}
				rep.emit(event{Op: "prepare", Phase: "done", UID: uid, IDs: ids})
			}
		}()
	}
	time.Sleep(childMaxLife)
	fail(fmt.Errorf("not killed within %v: %s", childMaxLife, strings.Join(os.Args, " ")))
}
