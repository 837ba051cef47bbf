// The Library view's pure helpers: the listing query, merging pages, storyboard tiles, cuts, keys.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { cutPositions, listQuery, mergeItems, moveSelection, tileStyle } from '../../../web/src/library.js'

test('the listing query carries the filters that are set and the cursor', () => {
  assert.equal(listQuery({}, null), '/v1/videos')
  assert.equal(listQuery({ status: 'completed', review: '', filename: '  cat ' }, 'abc', 24),
    '/v1/videos?limit=24&status=completed&filename=cat&cursor=abc')
  assert.equal(listQuery({ filename: 'a&b=c' }, null), '/v1/videos?filename=a%26b%3Dc')
})

test('a page merged into what is shown never repeats a video', () => {
  const shown = [{ video_id: 'a' }, { video_id: 'b' }]
  assert.deepEqual(mergeItems(shown, [{ video_id: 'b' }, { video_id: 'c' }]).map((i) => i.video_id), ['a', 'b', 'c'])
})

test('a storyboard tile is cut from the sprite at its place, scaled', () => {
  const index = { tile_width: 160, tile_height: 90, columns: 10, rows: 2 }
  assert.deepEqual(tileStyle(index, { x: 320, y: 90 }, 80), {
    width: '80px', height: '45px', backgroundSize: '800px 90px', backgroundPosition: '-160px -45px',
  })
})

test('scene cuts sit at their share of the duration; arrows stay within the grid', () => {
  assert.deepEqual(cutPositions([0, 2.5, 10, 11], 10), [0, 25, 100])
  assert.deepEqual(cutPositions([1], 0), [])
  assert.equal(moveSelection(-1, 'ArrowRight', 5, 3), 0)
  assert.equal(moveSelection(0, 'ArrowDown', 5, 3), 3)
  assert.equal(moveSelection(3, 'ArrowDown', 5, 3), 4)
  assert.equal(moveSelection(0, 'ArrowLeft', 5, 3), 0)
  assert.equal(moveSelection(2, 'ArrowUp', 0, 3), -1)
})
