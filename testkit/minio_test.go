package testkit

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func newMinIOClient(t *testing.T, m *MinIO) *minio.Client {
	t.Helper()
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(m.RootUser, m.RootPassword, ""),
		Secure:     false,
		MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func putObject(ctx context.Context, c *minio.Client, bucket, key string, data []byte) error {
	_, err := c.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	return err
}

func getObject(ctx context.Context, c *minio.Client, bucket, key string) ([]byte, error) {
	obj, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

func TestMinIOPutGet(t *testing.T) {
	m := StartMinIO(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := newMinIOClient(t, m)

	if err := c.MakeBucket(ctx, "kit", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	want := []byte("hello from testkit")
	if err := putObject(ctx, c, "kit", "dir/obj.txt", want); err != nil {
		t.Fatalf("put: %v", err)
	}
	got, err := getObject(ctx, c, "kit", "dir/obj.txt")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("get = %q, want %q", got, want)
	}

	bad, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.RootUser, "wrong-password", "")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := getObject(ctx, bad, "kit", "dir/obj.txt"); err == nil {
		t.Fatal("get with a wrong secret key succeeded")
	}
}

func TestMinIOStopStart(t *testing.T) {
	m := StartMinIO(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newMinIOClient(t, m)
	if err := c.MakeBucket(ctx, "kit", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := putObject(ctx, c, "kit", "kept", []byte("kept")); err != nil {
		t.Fatal(err)
	}

	m.Stop(t)
	downCtx, downCancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := c.ListBuckets(downCtx)
	downCancel()
	if err == nil {
		t.Fatal("ListBuckets succeeded while minio was stopped")
	}

	m.Start(t)
	got, err := getObject(ctx, c, "kit", "kept")
	if err != nil || string(got) != "kept" {
		t.Fatalf("get after Start = %q, %v; want \"kept\"", got, err)
	}
}
