// Command dispatch is the job dispatcher Lambda (provided.al2023): SQS-triggered from
// the jobs queue, it turns jobs into file task messages with dispatch.Handler.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/dispatch"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/worker"
)

func main() {
	log := lambdacontext.NewLogger()
	slog.SetDefault(log)
	h, err := newHandler(context.Background(), log)
	if err != nil {
		log.Error("dispatcher cannot start", "error", err)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lambda.StartHandlerFunc(h.Handle)
}

func newHandler(ctx context.Context, log *slog.Logger) (*dispatch.Handler, error) {
	// The same table, output and TTL settings as the worker's.
	cfg, err := worker.ConfigFromEnv(os.Getenv, process.Builtins())
	if err != nil {
		return nil, err
	}
	var missing []string
	get := func(name string) string {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			missing = append(missing, name+" is required")
		}
		return v
	}
	dcfg := dispatch.Config{TasksQueueURL: get(worker.EnvTasksQueueURL), JobsQueueURL: get(worker.EnvJobsQueueURL),
		MaxReceiveCount: cfg.MaxReceiveCount}
	if len(missing) > 0 {
		return nil, fmt.Errorf("dispatch: invalid configuration: %w", errors.New(strings.Join(missing, "; ")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatch: aws config: %w", err)
	}
	objects := s3.NewFromConfig(awsCfg)
	queue := sqs.NewFromConfig(awsCfg)
	store := ledger.New(dynamodb.NewFromConfig(awsCfg), cfg.Table, cfg.LedgerTTL)
	engine := &job.Engine{Ledger: store, Objects: objects, Topic: sns.NewFromConfig(awsCfg), TopicARN: cfg.CompletionTopic,
		OutputBucket: cfg.OutputBucket, OutputPrefix: cfg.OutputPrefix, Log: log,
		Queue: queue, JobsQueueURL: dcfg.JobsQueueURL}
	return dispatch.New(dcfg, objects, queue, store, engine, log)
}
