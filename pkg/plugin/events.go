package plugin

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/checkpoint"
)

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
	now := metav1.NewTime(time.Now())
	for _, le := range loadErrs {
		msg := fmt.Sprintf("gpu-kubelet-plugin cannot read claim checkpoint %s: %v. The claim it holds is not recovered; "+
			"check the file, then move it away (the plugin serves every other claim).", le.Path, le.Err)
		if len(msg) > 1024 {
			msg = msg[:1021] + "..."
		}
		ev := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: nodeName + ".", Namespace: metav1.NamespaceDefault},
			// Node events carry the node name as UID, as the kubelet's do.
			InvolvedObject: corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: nodeName, UID: types.UID(nodeName)},
			Reason:         ReasonCheckpointUnreadable,
			Message:        msg,
			Type:           corev1.EventTypeWarning,
			Source:         corev1.EventSource{Component: "gpu-kubelet-plugin", Host: nodeName},
			FirstTimestamp: now,
			LastTimestamp:  now,
			Count:          1,
		}
		if _, err := client.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			logger.Error(err, "Recording the event of an unreadable claim checkpoint", "path", le.Path)
		}
	}
}
