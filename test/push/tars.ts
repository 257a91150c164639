import type { TarEntryHeader as Header } from '../helpers/blobs.js';

// Built with tarGzOf (test/helpers/blobs.ts), which takes full tar headers.
/** Archives that would write outside the directory they are extracted into, or create device files. */
export const ESCAPING_TARS: [string, { header: Header; content?: string }[]][] = [
  ['a ../ entry', [{ header: { name: '../evil.sh' }, content: 'x' }]],
  ['a ../ inside a path', [{ header: { name: 'chart/../../evil.sh' }, content: 'x' }]],
  ['an absolute path', [{ header: { name: '/etc/cron.d/evil' }, content: 'x' }]],
  ['a Windows drive path', [{ header: { name: 'C:\\evil.bat' }, content: 'x' }]],
  ['a symlink to an absolute path', [{ header: { name: 'chart/link', type: 'symlink', linkname: '/etc/passwd' } }]],
  ['a symlink that climbs out', [{ header: { name: 'chart/link', type: 'symlink', linkname: '../../outside' } }]],
  ['a hard link to an absolute path', [{ header: { name: 'chart/hard', type: 'link', linkname: '/etc/shadow' } }]],
  ['a hard link that climbs out', [{ header: { name: 'chart/hard', type: 'link', linkname: '../outside' } }]],
  ['a character device', [{ header: { name: 'chart/tty', type: 'character-device', devmajor: 4, devminor: 1 } }]],
  ['a block device', [{ header: { name: 'chart/disk', type: 'block-device', devmajor: 8, devminor: 0 } }]],
  ['a FIFO', [{ header: { name: 'chart/pipe', type: 'fifo' } }]],
];

/** Archives with links and directories that stay inside: accepted. */
export const SAFE_TARS: [string, { header: Header; content?: string }[]][] = [
  [
    'a symlink to a sibling',
    [
      { header: { name: 'chart/values.yaml' }, content: 'a: 1\n' },
      { header: { name: 'chart/link', type: 'symlink', linkname: 'values.yaml' } },
    ],
  ],
  [
    'a symlink that climbs one level but stays inside',
    [{ header: { name: 'chart/templates/link', type: 'symlink', linkname: '../values.yaml' } }],
  ],
  [
    'a hard link inside',
    [
      { header: { name: 'chart/values.yaml' }, content: 'a: 1\n' },
      { header: { name: 'chart/copy', type: 'link', linkname: 'chart/values.yaml' } },
    ],
  ],
  [
    'a directory and ./ names',
    [
      { header: { name: './chart/', type: 'directory' } },
      { header: { name: './chart/Chart.yaml' }, content: 'name: x\n' },
    ],
  ],
];
