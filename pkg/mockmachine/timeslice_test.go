package mockmachine

import (
	"context"
	"path/filepath"
	"testing"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

func TestTimeSliceFile(t *testing.T) {
	f := NewTimeSliceFile(filepath.Join(t.TempDir(), "sub", TimeSliceFileName))
	ctx := context.Background()
	if i, err := f.Interval("GPU-1"); err != nil || i != configapi.DefaultTimeSlice {
		t.Fatalf("fresh interval = %s, %v", i, err)
	}
	if err := f.SetTimeSlice(ctx, "GPU-1", configapi.LongTimeSlice); err != nil {
		t.Fatal(err)
	}
	// Another process (the e2e suite) reads the file.
	if i, _ := NewTimeSliceFile(f.Path()).Interval("GPU-1"); i != configapi.LongTimeSlice {
		t.Errorf("interval = %s, want Long", i)
	}
	if err := f.SetTimeSlice(ctx, "GPU-1", configapi.DefaultTimeSlice); err != nil {
		t.Fatal(err)
	}
	if all, _ := f.Intervals(); len(all) != 0 {
		t.Errorf("Default is not removed from the state: %v", all)
	}
	if err := f.SetTimeSlice(ctx, "GPU-1", "Bogus"); err == nil {
		t.Error("bogus interval accepted")
	}
}
