package plugin

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/checkpoint"
)

// eventSeq numbers the events of this process (see recordNodeEvent).
var eventSeq atomic.Uint32

// eventTimeout bounds the events of the start-up; they are best effort.
const eventTimeout = 5 * time.Second

// ReasonCheckpointUnreadable is the reason of the Warning event on the node
// for a claim checkpoint file the plugin cannot read.
const ReasonCheckpointUnreadable = "ClaimCheckpointUnreadable"

// reportUnreadableCheckpoints records a Warning event on the node for every
// checkpoint file that could not be read, so that `kubectl describe node`
// shows it next to the plugin's log line and the
// gpudra_checkpoint_load_errors_total metric. Best effort: failures are
// logged, never returned (the plugin serves the other claims regardless).
func reportUnreadableCheckpoints(ctx context.Context, client kubernetes.Interface, nodeName string, loadErrs []checkpoint.LoadError) {
	if len(loadErrs) == 0 || client == nil {
		return
	}
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	for _, le := range loadErrs {
		msg := fmt.Sprintf("gpu-kubelet-plugin cannot read claim checkpoint %s: %v. The claim it holds is not recovered; "+
			"check the file, then move it away (the plugin serves every other claim).", le.Path, le.Err)
		if err := recordNodeEvent(ctx, client, nodeName, ReasonCheckpointUnreadable, msg); err != nil {
			logger.Error(err, "Recording the event of an unreadable claim checkpoint", "path", le.Path)
		}
	}
}

// recordNodeEvent records a Warning event on the node, in the namespace
// default where node events live; msg is cut to the 1024 characters the
// API server allows.
func recordNodeEvent(ctx context.Context, client kubernetes.Interface, nodeName, reason, msg string) error {
	// Node events carry the node name as UID, as the kubelet's do.
	return recordEvent(ctx, client, nodeName, corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: nodeName, UID: types.UID(nodeName)},
		metav1.NamespaceDefault, reason, msg)
}

// recordEvent records a Warning event of the plugin on node about obj, in
// namespace; msg is cut to the 1024 characters the API server allows.
func recordEvent(ctx context.Context, client kubernetes.Interface, nodeName string, obj corev1.ObjectReference, namespace, reason, msg string) error {
	if len(msg) > 1024 {
		msg = msg[:1021] + "..."
	}
	t := time.Now()
	now := metav1.NewTime(t)
	ev := &corev1.Event{
		// Named as client-go's event recorder names them, plus a sequence
		// number so that two events of one nanosecond differ.
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x.%d", obj.Name, t.UnixNano(), eventSeq.Add(1)), Namespace: namespace},
		InvolvedObject: obj,
		Reason:         reason,
		Message:        msg,
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "gpu-kubelet-plugin", Host: nodeName},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	_, err := client.CoreV1().Events(namespace).Create(ctx, ev, metav1.CreateOptions{})
	return err
}
