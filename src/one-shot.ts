// What the one-shot commands (`state`, `explain`, `--dry-run`) share. Their output can be tens of megabytes
// (the rules of a 10,000-service cluster), so it is written as it is produced, never held as one string; and
// they run in phases (read the file, build the model, render), each leaving garbage the next does not need.
import { once } from 'node:events';

/** Pieces shorter than this are gathered into one write: one write per rule line would cost a system call each. */
const WRITE_SIZE = 64 * 1024;

/**
 * Writes `chunks` to `out` as they come, in order, waiting for 'drain' whenever `out` says it is full (a pipe to
 * a slow reader), so that at most about WRITE_SIZE of output waits in memory at any time.
 */
export async function writeChunks(out: NodeJS.WritableStream, chunks: Iterable<string>): Promise<void> {
  let pending: string[] = [];
  let size = 0;
  const write = async (text: string) => {
    if (!out.write(text)) await once(out, 'drain');
  };
  for (const chunk of chunks) {
    pending.push(chunk);
    size += chunk.length;
    if (size < WRITE_SIZE) continue;
    await write(pending.join(''));
    pending = [];
    size = 0;
  }
  if (size > 0) await write(pending.join(''));
}
