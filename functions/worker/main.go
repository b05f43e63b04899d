// Command worker is the file worker Lambda (provided.al2023): it reads its configuration
// from the environment once, builds the AWS clients and serves SQS batches with
// worker.Handler.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/procs"
	"github.com/fileflow/fileflow/pkg/worker"
)

func main() {
	log := lambdacontext.NewLogger()
	slog.SetDefault(log)
	procs.Set(os.Getenv) // the CPU the function's memory buys, not the CPUs it sees
	h, err := newHandler(context.Background(), log)
	if err != nil {
		// Fails the init phase with the reason in the log: every invocation would fail.
		log.Error("worker cannot start", "error", err)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lambda.StartHandlerFunc(h.Handle)
}

func newHandler(ctx context.Context, log *slog.Logger) (*worker.Handler, error) {
	reg := process.Builtins()
	cfg, err := worker.ConfigFromEnv(os.Getenv, reg)
	if err != nil {
		return nil, err
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("worker: aws config: %w", err)
	}
	objects := s3.NewFromConfig(awsCfg)
	queue := sqs.NewFromConfig(awsCfg)
	store := ledger.New(dynamodb.NewFromConfig(awsCfg), cfg.Table, cfg.LedgerTTL)
	return worker.New(cfg, worker.Deps{
		Objects: objects,
		Ledger:  store,
		Queue:   queue,
		Jobs: &job.Engine{Ledger: store, Objects: objects, Topic: sns.NewFromConfig(awsCfg), TopicARN: cfg.CompletionTopic,
			OutputBucket: cfg.OutputBucket, OutputPrefix: cfg.OutputPrefix, Log: log,
			Queue: queue, JobsQueueURL: cfg.JobsQueueURL},
		Registry: reg,
		Logger:   log,
	})
}
