package syncrec

import "bytes"

// Split takes apart a line that a crash made of two. Writes to a file
// several processes append to are whole only while nobody is killed: a
// SIGKILL (or a full disk) can stop the kernel between two pages of a
// write, and the next writer's line then continues the cut one, with no
// newline between. A marked line cut so (the applier was killed while
// writing it) is recognised by its start, a prefix of the mark, and by
// the whole line after it: a JSON object that ends the line.
//
// ok is true when line is not one JSON object, starts like a marked line
// (the mark, or a cut-short part of it), and ends with one JSON object
// starting at a '{': torn is what comes before that object (the remains
// of the interrupted write, never a record: the applier writes that
// record again), rest is the object with the line's ending. The earliest
// such object is the one: the torn part is a prefix of an unclosed
// object, which no object inside it ends.
func Split(line []byte) (torn, rest []byte, ok bool) {
	if CheckObject(line) == nil {
		return nil, nil, false
	}
	for p := 1; p < len(line); p++ {
		i := bytes.IndexByte(line[p:], '{')
		if i < 0 {
			break
		}
		p += i
		if !startsLikeMark(line[:p]) {
			break
		}
		if CheckObject(line[p:]) == nil {
			return line[:p], line[p:], true
		}
	}
	return nil, nil, false
}

// startsLikeMark reports whether torn starts with the mark or is a
// prefix of it at least one byte long.
func startsLikeMark(torn []byte) bool {
	n := min(len(torn), len(prefix))
	return n > 0 && bytes.Equal(torn[:n], prefix[:n])
}
