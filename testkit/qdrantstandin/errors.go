package qdrantstandin

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The stand-in answers with gRPC statuses only; these constructors keep the
// codes and Qdrant-like messages in one place.

func errUnauthenticated(msg string) error { return status.Error(codes.Unauthenticated, msg) }

func errPermissionDenied(format string, args ...any) error {
	return status.Error(codes.PermissionDenied, fmt.Sprintf(format, args...))
}

func errCollectionNotFound(name string) error {
	return status.Error(codes.NotFound, fmt.Sprintf("Not found: Collection `%s` doesn't exist!", name))
}

func errCollectionExists(name string) error {
	return status.Error(codes.AlreadyExists, fmt.Sprintf("Collection `%s` already exists!", name))
}

func errBadInput(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, "Wrong input: "+fmt.Sprintf(format, args...))
}

func errDimension(want, got int) error {
	return errBadInput("Vector dimension error: expected dim: %d, got %d", want, got)
}

// errUnsupported reports a request the real Qdrant would serve but this
// stand-in does not; the message says so, so nobody mistakes it for Qdrant.
func errUnsupported(format string, args ...any) error {
	return status.Error(codes.Unimplemented, "qdrant-standin does not implement "+fmt.Sprintf(format, args...))
}
