/**
 * The words a text-conditioned model was trained on (its captions'), kept in the pipeline folder
 * as `training_vocabulary.json`, so generation can say which prompt words the model never saw:
 * with a text encoder that carries no meaning of its own (the tiny random CLIP), those words do
 * nothing, and a user should know.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../checkpoint/files.js';

export const VOCABULARY_FILE = 'training_vocabulary.json';

/** Lower-cased words of a text: runs of letters or digits, and runs of symbols (emoji); punctuation separates. */
export function words(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+|[^\s\p{L}\p{N}\p{P}]+/gu) ?? [];
}

/** Every word of the captions, sorted. */
export function captionVocabulary(captions: readonly (readonly string[])[]): string[] {
  return [...new Set(captions.flat().flatMap(words))].sort();
}

/** The prompts' words that are not in the vocabulary, in order of first appearance. */
export function unknownWords(prompts: readonly string[], vocabulary: ReadonlySet<string>): string[] {
  return [...new Set(prompts.flatMap(words))].filter((w) => !vocabulary.has(w));
}

export function writeVocabulary(dir: string, vocabulary: readonly string[]): void {
  writeJsonAtomic(path.join(dir, VOCABULARY_FILE), { words: vocabulary });
}

/** The pipeline folder's training vocabulary, or undefined when it has none (or an unreadable one). */
export function readVocabulary(dir: string): Set<string> | undefined {
  const file = path.join(dir, VOCABULARY_FILE);
  if (!existsSync(file)) return undefined;
  try {
    const w = (JSON.parse(readFileSync(file, 'utf8')) as { words?: unknown }).words;
    return Array.isArray(w) && w.every((x) => typeof x === 'string') ? new Set(w) : undefined;
  } catch {
    return undefined;
  }
}
